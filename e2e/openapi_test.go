package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
)

// The end-to-end tests hold the server to openapi.yaml: every request
// they send to a node through oasClient, and every answer, is validated
// against the document, and so is every webhook their receivers get
// (checkWebhook). An undocumented route, field, status or error code
// fails the test that met it.

// apiDoc is the parsed document and its validator, built once.
type apiDoc struct {
	mu       sync.Mutex // the validator's caches are not documented as safe for concurrent use
	v        validator.Validator
	model    *v3.Document
	webhooks map[string]*base.Schema // event type → request body schema
	schemas  schema_validation.SchemaValidator
}

var loadAPIDoc = sync.OnceValues(func() (*apiDoc, error) {
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		return nil, err
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		return nil, fmt.Errorf("parse openapi.yaml: %w", err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("build openapi.yaml: %w", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		return nil, fmt.Errorf("validator for openapi.yaml: %v", errs)
	}
	d := &apiDoc{v: v, model: &model.Model, webhooks: map[string]*base.Schema{}, schemas: schema_validation.NewSchemaValidator()}
	if model.Model.Webhooks != nil {
		for name, item := range model.Model.Webhooks.FromOldest() {
			if item.Post == nil || item.Post.RequestBody == nil {
				continue
			}
			if mt, ok := item.Post.RequestBody.Content.Get("application/json"); ok && mt.Schema != nil {
				d.webhooks[name] = mt.Schema.Schema()
			}
		}
	}
	return d, nil
})

func apiDocument(tb testing.TB) *apiDoc {
	tb.Helper()
	d, err := loadAPIDoc()
	if err != nil {
		tb.Fatalf("openapi.yaml: %v", err)
	}
	return d
}

// oasClient returns a client like base (nil: a default one) whose every
// exchange is validated against openapi.yaml; a mismatch is a test error.
func oasClient(tb testing.TB, base *http.Client) *http.Client {
	tb.Helper()
	d := apiDocument(tb)
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = &oasTransport{tb: tb, doc: d, next: next}
	return c
}

type oasTransport struct {
	tb   testing.TB
	doc  *apiDoc
	next http.RoundTripper
}

func (t *oasTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		var err error
		if reqBody, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	res, err := t.next.RoundTrip(req)
	if err != nil {
		return res, err
	}
	resBody, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(resBody))
	if err != nil {
		return res, nil // the caller sees the short body; nothing to validate
	}
	if problems := t.doc.exchange(req, reqBody, res, resBody); len(problems) > 0 {
		t.tb.Errorf("openapi.yaml does not describe %s %s → %d:\n  %s\n  request: %.300s\n  response: %.300s",
			req.Method, req.URL.Path, res.StatusCode, strings.Join(problems, "\n  "), reqBody, resBody)
	}
	return res, nil
}

// exchange validates one request and its answer; it returns what does not
// match, one line each.
//
// The answer is always validated. The request is held to the document
// only when the server accepted it (a status below 400): the bad-input
// tests send invalid requests on purpose, and what the document promises
// for those is the documented error answer. A path the document does not
// have may only be answered 404 or 405 with the error envelope.
func (d *apiDoc) exchange(req *http.Request, reqBody []byte, res *http.Response, resBody []byte) []string {
	// The validator reads the bodies: give it copies.
	rq := req.Clone(req.Context())
	rq.Body = io.NopCloser(bytes.NewReader(reqBody))
	rs := *res
	rs.Body = io.NopCloser(bytes.NewReader(resBody))
	rs.Request = rq
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	ok, errs := d.v.ValidateHttpRequestSync(rq)
	for _, e := range errs {
		if e.ValidationType == "path" && (e.ValidationSubType == "missing" || e.ValidationSubType == "missingOperation") {
			if res.StatusCode != http.StatusNotFound && res.StatusCode != http.StatusMethodNotAllowed {
				return []string{"the route is not in the document"}
			}
			return d.errorEnvelope(resBody)
		}
	}
	if !ok && res.StatusCode < 400 {
		for _, e := range errs {
			if !undecodable(e) {
				out = append(out, "request (accepted): "+validationText(e))
			}
		}
	}
	rq.Body = io.NopCloser(bytes.NewReader(reqBody))
	if ok, errs := d.v.ValidateHttpResponse(rq, &rs); !ok {
		for _, e := range errs {
			if !undecodable(e) {
				out = append(out, "response: "+validationText(e))
			}
		}
	}
	return out
}

// undecodable reports a body the validator could not read because it
// decodes numbers as float64: valid JSON such as 1e400, which some tests
// send on purpose (riverhub keeps numbers as written). Such a body is not
// validated rather than reported.
func undecodable(e *verrors.ValidationError) bool {
	return strings.Contains(e.Message+" "+e.Reason, "cannot unmarshal number")
}

// errorEnvelope checks body against the document's ErrorEnvelope.
func (d *apiDoc) errorEnvelope(body []byte) []string {
	env, ok := d.model.Components.Schemas.Get("ErrorEnvelope")
	if !ok {
		return []string{"the document has no ErrorEnvelope schema"}
	}
	var out []string
	if ok, errs := d.schemas.ValidateSchemaBytes(env.Schema(), body); !ok {
		for _, e := range errs {
			out = append(out, "error envelope: "+validationText(e))
		}
	}
	return out
}

func validationText(e *verrors.ValidationError) string {
	s := e.Message
	if e.Reason != "" && e.Reason != e.Message {
		s += ": " + e.Reason
	}
	for _, f := range e.SchemaValidationErrors {
		s += fmt.Sprintf(" [%s: %s]", f.FieldPath, f.Reason)
	}
	return s
}

// checkWebhook validates a delivery a test receiver got against the
// document's webhooks: its event type must be described, its body must
// match, and it must carry the signature headers.
func checkWebhook(tb testing.TB, r *http.Request, body []byte) {
	tb.Helper()
	d := apiDocument(tb)
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &ev)
	sch, ok := d.webhooks[ev.Type]
	if !ok {
		tb.Errorf("openapi.yaml has no webhook %q (delivery %.200s)", ev.Type, body)
		return
	}
	var errs []string
	d.mu.Lock()
	if ok, verrs := d.schemas.ValidateSchemaBytes(sch, body); !ok {
		for _, e := range verrs {
			errs = append(errs, validationText(e))
		}
	}
	d.mu.Unlock()
	for _, h := range []string{"mr-signature", "X-ModelRiver-Signature", "X-ModelRiver-Timestamp"} {
		if r.Header.Get(h) == "" {
			errs = append(errs, "no "+h+" header")
		}
	}
	if len(errs) > 0 {
		tb.Errorf("webhook %s does not match openapi.yaml:\n  %s\n  body: %.300s", ev.Type, strings.Join(errs, "\n  "), body)
	}
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// wrapped transport.
func (t *oasTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// openapi.yaml is a valid OpenAPI document, every node serves it (as YAML
// and as the same document in JSON), and it describes the webhooks the
// tests' receivers check.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	d := apiDocument(t)
	d.mu.Lock()
	ok, errs := d.v.ValidateDocument()
	d.mu.Unlock()
	if !ok {
		for _, e := range errs {
			t.Errorf("openapi.yaml: %s", validationText(e))
		}
	}
	for _, ev := range []string{"task.completed", "task.ai_generated", "webhook.test"} {
		if _, ok := d.webhooks[ev]; !ok {
			t.Errorf("openapi.yaml does not describe the %s webhook", ev)
		}
	}

	n := newNode(t)
	file, _ := os.ReadFile("openapi.yaml")
	y := n.do(t, "GET", "/openapi.yaml", "", nil)
	if y.status != 200 || !bytes.Equal(y.body, file) || !strings.HasPrefix(y.header.Get("Content-Type"), "application/yaml") {
		t.Errorf("GET /openapi.yaml: %d %s, %d bytes; want 200 and the file", y.status, y.header.Get("Content-Type"), len(y.body))
	}
	j := n.do(t, "GET", "/openapi.json", "", nil)
	var fromJSON any
	if err := json.Unmarshal(j.body, &fromJSON); err != nil || j.status != 200 {
		t.Fatalf("GET /openapi.json: %d, %v", j.status, err)
	}
	conv, err := yaml.YAMLToJSON(file)
	if err != nil {
		t.Fatal(err)
	}
	var fromYAML any
	_ = json.Unmarshal(conv, &fromYAML)
	if !reflect.DeepEqual(fromJSON, fromYAML) {
		t.Error("/openapi.json is not the same document as /openapi.yaml")
	}
}

// docs/api.md's table of error codes and openapi.yaml's list are the same
// codes under the same statuses.
func TestOpenAPIAgreesWithDocs(t *testing.T) {
	t.Parallel()
	d := apiDocument(t)
	md, err := os.ReadFile("docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	// | 409 | `workflow_exists`, ... |
	row := regexp.MustCompile("(?m)^\\| (\\d{3}) \\| (.*) \\|$")
	code := regexp.MustCompile("`([a-z_]+)`")
	inDocs := map[string]string{} // code → status
	for _, m := range row.FindAllStringSubmatch(string(md), -1) {
		for _, c := range code.FindAllStringSubmatch(m[2], -1) {
			inDocs[c[1]] = m[1]
		}
	}
	if len(inDocs) < 10 {
		t.Fatalf("found only %d error codes in docs/api.md's table", len(inDocs))
	}
	env, ok := d.model.Components.Schemas.Get("ErrorEnvelope")
	if !ok {
		t.Fatal("openapi.yaml has no components.schemas.ErrorEnvelope")
	}
	prop, ok := env.Schema().Properties.Get("error")
	if !ok {
		t.Fatal("ErrorEnvelope has no error property")
	}
	inSpec := map[string]bool{}
	for _, v := range prop.Schema().Enum {
		inSpec[v.Value] = true
	}
	for c, st := range inDocs {
		if !inSpec[c] {
			t.Errorf("docs/api.md lists %s (%s); openapi.yaml's Error.error does not", c, st)
		}
	}
	for c := range inSpec {
		if _, ok := inDocs[c]; !ok {
			t.Errorf("openapi.yaml lists error %s; docs/api.md's table does not", c)
		}
	}
}
