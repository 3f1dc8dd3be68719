package server

import (
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	"github.com/prometheus/client_golang/prometheus"
)

// Every route the server registers is in openapi.yaml, and every
// operation there is a route: a route added or removed without the
// document fails here.
func TestEveryRouteIsDocumented(t *testing.T) {
	raw, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, item := range model.Model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().FromOldest() {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}

	s := New(Deps{OpenAPI: raw, Sockets: http.NotFoundHandler(), Registry: prometheus.NewRegistry()})
	param := regexp.MustCompile(`:([a-z_]+)`)
	served := map[string]bool{}
	for _, r := range s.router.Routes() {
		// The console's static files (/console/*file) are documented as
		// their entry point, /console/.
		path, _, _ := strings.Cut(r.Path, "*")
		served[r.Method+" "+param.ReplaceAllString(path, "{$1}")] = true
	}
	for _, k := range slices.Sorted(maps.Keys(served)) {
		if !documented[k] {
			t.Errorf("%s is served but not in openapi.yaml", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(documented)) {
		if !served[k] {
			t.Errorf("%s is in openapi.yaml but not served", k)
		}
	}
}
