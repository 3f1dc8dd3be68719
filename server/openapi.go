package server

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/goccy/go-yaml"
)

// serveOpenAPI answers GET /openapi.yaml and /openapi.json with the API's
// description (Deps.OpenAPI), on every node and without a key: clients are
// generated from it before they have one. The JSON form is converted once
// (a document that does not convert is a build mistake the tests catch;
// the YAML is served regardless).
func (s *Server) serveOpenAPI(r *gin.Engine) {
	if len(s.OpenAPI) == 0 {
		return
	}
	r.GET("/openapi.yaml", func(c *gin.Context) { c.Data(http.StatusOK, "application/yaml; charset=utf-8", s.OpenAPI) })
	js, err := yaml.YAMLToJSON(s.OpenAPI)
	if err != nil {
		s.log().Error().Err(err).Msg("openapi.yaml does not convert to JSON; /openapi.json is not served")
		return
	}
	r.GET("/openapi.json", func(c *gin.Context) { c.Data(http.StatusOK, "application/json; charset=utf-8", js) })
}
