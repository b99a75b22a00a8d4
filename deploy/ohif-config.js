// OHIF reading the demo Orthanc over DICOMweb (deploy/compose.yaml), through its own nginx (ohif-nginx.conf):
// same origin, so no CORS set-up on Orthanc.
window.config = {
  routerBasename: "/",
  showStudyList: true,
  dataSources: [
    {
      namespace: "@ohif/extension-default.dataSourcesModule.dicomweb",
      sourceName: "orthanc",
      configuration: {
        friendlyName: "Demo PACS (Orthanc)",
        name: "orthanc",
        wadoUriRoot: "/wado",
        qidoRoot: "/dicom-web",
        wadoRoot: "/dicom-web",
        qidoSupportsIncludeField: false,
        imageRendering: "wadors",
        thumbnailRendering: "wadors",
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
      },
    },
  ],
  defaultDataSourceName: "orthanc",
};
