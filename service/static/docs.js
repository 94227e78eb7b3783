// Swagger UI 5 from the swagger-ui-bundle-v2 package, served by this server: nothing is fetched
// from another origin, and the page's CSP allows no inline script.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
