"""Driving OHIF 3.13 in headless Chromium the way a radiologist does, and reading back what it shows.

Actions go through the UI (the study list, double-clicks on the study browser, the prompts, the side panels).
To know *where* to look on a screenshot, the page's own cornerstone objects are asked (OHIF's build exposes
``window.cornerstone``, ``window.cornerstoneTools`` and ``window.services``): which image a viewport shows and
where a patient-space point lands on the screen. The colours are then read from the screenshot itself.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

# Flags for Debian's chromium on a machine without a GPU or network (see docs/viewers.md).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
VIEWPORT_SIZE = {"width": 1400, "height": 900}
# OHIF shows its onboarding tour on the first visit of /viewer; a radiologist dismisses it once.
SKIP_TOURS = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));"
TIMEOUT_MS = 45_000
_SOP_IN_IMAGE_ID = re.compile(r"/instances/([0-9.]+)(?:/frames/(\d+))?")

_VIEWPORTS_JS = """() => {
  const out = [];
  for (const engine of window.cornerstone.getRenderingEngines()) {
    for (const vp of engine.getViewports()) {
      const r = vp.element.getBoundingClientRect();
      const imageId = vp.getCurrentImageId ? vp.getCurrentImageId() : null;
      out.push({id: vp.id, imageId: imageId || null, rendered: !!(imageId && vp.getImageData && vp.getImageData()),
                rect: [r.x, r.y, r.width, r.height]});
    }
  }
  return out;
}"""

_WORLD_TO_PAGE_JS = """([viewportId, points]) => {
  for (const engine of window.cornerstone.getRenderingEngines()) {
    const vp = engine.getViewport(viewportId);
    if (!vp) continue;
    const r = vp.element.getBoundingClientRect();
    return points.map(p => { const c = vp.worldToCanvas(p); return [r.x + c[0], r.y + c[1]]; });
  }
  return null;
}"""

_IMAGE_TO_PAGE_JS = """([viewportId, imageId, points]) => {
  for (const engine of window.cornerstone.getRenderingEngines()) {
    const vp = engine.getViewport(viewportId);
    if (!vp) continue;
    const r = vp.element.getBoundingClientRect();
    return points.map(p => {
      const c = vp.worldToCanvas(window.cornerstone.utilities.imageToWorldCoords(imageId, p));
      return [r.x + c[0], r.y + c[1]];
    });
  }
  return null;
}"""

_STACK_JS = """(viewportId) => {
  for (const engine of window.cornerstone.getRenderingEngines()) {
    const vp = engine.getViewport(viewportId);
    if (vp && vp.getImageIds) return [vp.getImageIds(), vp.getCurrentImageIdIndex()];
  }
  return null;
}"""

_SR_ANNOTATIONS_JS = """() => window.cornerstoneTools.annotation.state.getAllAnnotations()
  .filter(a => a.metadata && a.metadata.toolName === 'DICOMSRDisplay')
  .map(a => ({uid: a.annotationUID, imageId: a.metadata.referencedImageId || null,
              graphicType: a.metadata.graphicType, points: a.data.handles.points,
              labels: (a.data.labels || []).map(l => [l.label, l.value])}))"""

_MEASUREMENTS_JS = """() => window.services.measurementService.getMeasurements().map(m => ({
  toolName: m.toolName, label: m.label || null, sop: m.referencedImageId || null,
  displayText: m.displayText || null, finding: m.finding ? m.finding.CodeMeaning || null : null}))"""


def sop_of_image_id(image_id: str | None) -> str | None:
    """The SOPInstanceUID in a WADO-RS imageId (``wadors:/dicom-web/studies/../instances/UID/frames/1``)."""
    match = _SOP_IN_IMAGE_ID.search(image_id or "")
    return match.group(1) if match else None


@dataclass
class Viewport:
    id: str
    image_id: str | None
    rendered: bool
    rect: tuple[float, float, float, float]

    @property
    def sop_instance_uid(self) -> str | None:
        return sop_of_image_id(self.image_id)


@dataclass
class Ohif:
    """One browser page on the bench's OHIF; ``errors`` collects page errors and OHIF's error boundaries."""

    page: Any  # playwright.sync_api.Page (imported lazily: the tests skip when Playwright is absent)
    base_url: str
    artifacts: Path
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    hover_step: int = 0

    def __post_init__(self) -> None:
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", self._on_console)
        self.page.route("**/*", self._only_same_origin)

    def _on_console(self, message: Any) -> None:
        text = message.text
        if "Error Boundary" in text or (message.type == "error" and "Failed to load resource" not in text):
            self.errors.append(f"console {message.type}: {text[:500]}")

    def _only_same_origin(self, route: Any) -> None:
        # Nothing may leave the machine: every request goes to the bench's own origin or is refused.
        url = route.request.url
        if url.startswith(self.base_url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    # --- navigation -------------------------------------------------------------------------------------
    def open_study_list(self) -> None:
        self.page.goto(self.base_url + "/")
        self.page.get_by_text("Study List").first.wait_for()

    def open_viewer(self, study_instance_uid: str) -> None:
        """The basic viewer on one study; returns once its first image is drawn."""
        self.page.goto(f"{self.base_url}/viewer?StudyInstanceUIDs={study_instance_uid}")
        self.page.locator("[data-cy=studyBrowser-panel]").wait_for()
        self.wait_until(lambda: any(vp.rendered for vp in self.viewports()), "the first image")

    def study_browser_item(self, text: str) -> Any:
        panel = self.page.locator("[data-cy=studyBrowser-panel]")
        return panel.locator("[data-cy=study-browser-thumbnail], [data-cy=study-browser-thumbnail-no-image]").filter(
            has_text=text
        )

    def open_series(self, description: str) -> None:
        """Double-click the series in the study browser (thumbnail or list entry), as a user opens it."""
        self.study_browser_item(description).first.dblclick()

    def answer_prompt(self, answer: str = "Yes") -> None:
        """OHIF's viewport prompts ("Do you want to open this Segmentation?", "...continue tracking...")."""
        self.page.get_by_role("button", name=answer, exact=True).first.click()

    def open_right_panel(self, data_cy: str) -> None:
        """``panelSegmentation-btn`` or ``trackedMeasurements-btn``."""
        self.page.locator(f"[data-cy={data_cy}]").first.click()

    # --- reading the state ------------------------------------------------------------------------------
    def viewports(self) -> list[Viewport]:
        rows = self.page.evaluate(_VIEWPORTS_JS)
        return [Viewport(r["id"], r["imageId"], r["rendered"], tuple(r["rect"])) for r in rows]

    def active_viewport(self) -> Viewport:
        """The first viewport that shows an image, once one does: OHIF registers an SR's annotations before
        its viewport has drawn the image they are on, and on a loaded machine that can take seconds."""
        rendered: list[Viewport] = self.wait_until(
            lambda: [vp for vp in self.viewports() if vp.rendered], "an image in a viewport"
        )
        return rendered[0]

    def world_to_page(self, viewport: Viewport, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Page (screenshot) x, y of patient-space points (mm) as drawn in ``viewport``."""
        result = self.page.evaluate(_WORLD_TO_PAGE_JS, [viewport.id, np.asarray(points, dtype=float).tolist()])
        if result is None:
            raise AssertionError(f"viewport {viewport.id} is gone")
        return np.asarray(result, dtype=float)

    def image_to_page(self, viewport: Viewport, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Page (screenshot) x, y of image points (column, row), on the image ``viewport`` shows now."""
        args = [viewport.id, viewport.image_id, np.asarray(points, dtype=float).tolist()]
        result = self.page.evaluate(_IMAGE_TO_PAGE_JS, args)
        if result is None:
            raise AssertionError(f"viewport {viewport.id} is gone")
        return np.asarray(result, dtype=float)

    def scroll_to(self, viewport: Viewport, sop_instance_uid: str) -> Viewport:
        """Scroll the stack with the arrow keys, as a user does, until ``viewport`` shows that image."""
        stack = self.page.evaluate(_STACK_JS, viewport.id)
        if stack is None:
            raise AssertionError(f"viewport {viewport.id} holds no stack")
        image_ids, index = stack
        target = next(
            (k for k, image_id in enumerate(image_ids) if sop_of_image_id(image_id) == sop_instance_uid), None
        )
        if target is None:
            raise AssertionError(f"image {sop_instance_uid} is not in the stack of viewport {viewport.id}")
        self.page.mouse.move(viewport.rect[0] + viewport.rect[2] / 2, viewport.rect[1] + viewport.rect[3] / 2)
        key = "ArrowDown"
        for _ in range(4):  # one key press tells the direction; then the rest of the way, then check
            if index == target:
                break
            self.page.keyboard.press(key)
            self.page.wait_for_timeout(100)
            _, moved = self.page.evaluate(_STACK_JS, viewport.id)
            if moved == index or abs(moved - target) > abs(index - target):
                key = "ArrowUp" if key == "ArrowDown" else "ArrowDown"
            else:
                for _ in range(abs(target - moved)):
                    self.page.keyboard.press(key)
                self.page.wait_for_timeout(300)
                _, moved = self.page.evaluate(_STACK_JS, viewport.id)
            index = moved
        self.page.mouse.move(5, 5)
        self.page.wait_for_timeout(500)
        shown = next(vp for vp in self.viewports() if vp.id == viewport.id)
        if shown.sop_instance_uid != sop_instance_uid:
            raise AssertionError(f"could not scroll viewport {viewport.id} to image {sop_instance_uid}")
        return shown

    def hover(self, viewport: Viewport) -> None:
        """Move the mouse across the middle of the viewport (as a reader's hand does)."""
        x, y, width, height = viewport.rect
        self.hover_step = (self.hover_step + 1) % 8
        self.page.mouse.move(x + width / 2 + 4 * self.hover_step, y + height * 0.9)

    def sr_annotations(self) -> list[dict[str, Any]]:
        """The SR viewport's drawings (OHIF's DICOMSRDisplay tool): one per Tracking Unique Identifier."""
        result: list[dict[str, Any]] = self.page.evaluate(_SR_ANNOTATIONS_JS)
        return result

    def measurements(self) -> list[dict[str, Any]]:
        """What OHIF's Measurements panel holds (measurementService)."""
        result: list[dict[str, Any]] = self.page.evaluate(_MEASUREMENTS_JS)
        return result

    def segment_rows(self) -> list[tuple[str, tuple[int, int, int]]]:
        """(label, colour of its swatch) of every segment row in the Segmentation panel."""
        rows = []
        for row in self.page.locator("[data-cy=data-row]").all():
            title = row.locator("[data-cy=data-row-title]").inner_text().strip()
            style = row.locator("[data-cy=data-row-colorhex]").get_attribute("style") or ""
            r, g, b = ([int(v) for v in re.findall(r"\d+", style)] + [0, 0, 0])[:3]
            rows.append((title, (r, g, b)))
        return rows

    def viewport_texts(self) -> list[str]:
        """The text OHIF draws over the images (SVG annotation labels), as displayed."""
        texts: list[str] = self.page.locator("[data-cy=viewport-grid] svg text").evaluate_all(
            "els => els.map(e => e.textContent || '')"
        )
        return [t.strip() for t in texts if t.strip()]

    def wait_until(self, condition: Any, what: str, timeout_ms: int = TIMEOUT_MS) -> Any:
        """Poll ``condition()`` (Python, reading the page) until truthy; fail naming ``what`` and the errors."""
        step = 250
        for _ in range(max(1, timeout_ms // step)):
            value = condition()
            if value:
                return value
            if self.errors and any("Error Boundary" in e or "page error" in e for e in self.errors):
                break
            self.page.wait_for_timeout(step)
        self.screenshot("timeout")
        raise AssertionError(f"OHIF did not show {what}; errors: {self.errors[:3]}")

    def screenshot(self, name: str) -> npt.NDArray[np.uint8]:
        """A PNG of the page kept in the artifacts folder, returned as RGB (rows, columns, 3)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        png = self.page.screenshot(path=str(self.artifacts / f"{name}.png"))
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
