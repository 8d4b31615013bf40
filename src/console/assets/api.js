// The API reference page: Swagger UI (bundled, served by stowage) on /openapi.json, which the browser
// reads with its console session.
/** @type {any} */ (window).SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
});
