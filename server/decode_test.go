package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/project"
)

// wantInvalidRequest fails unless err is a 400 invalid_request whose message
// mentions every string of mention.
func wantInvalidRequest(tb testing.TB, err error, mention ...string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("err = nil, want invalid_request mentioning %q", mention)
	}
	e := apperr.As(err)
	if e == nil {
		tb.Fatalf("err = %v (%T), want an *apperr.Error", err, err)
	}
	if e.Kind != apperr.Invalid || e.Code != "invalid_request" || statusOf(e.Kind) != http.StatusBadRequest {
		tb.Errorf("err = kind %d code %q, want invalid_request (400)", e.Kind, e.Code)
	}
	for _, m := range mention {
		if !strings.Contains(e.Message, m) {
			tb.Errorf("message %q does not mention %q", e.Message, m)
		}
	}
}

const okMsgs = `"messages":[{"role":"user","content":"hi"}]`

func TestDecodeTaskRequestRejects(t *testing.T) {
	t.Parallel()
	many := `{"workflow":"w","messages":[` + strings.Repeat(`{"role":"user","content":"x"},`, 1000) + `{"role":"user","content":"x"}]}`
	tests := []struct {
		name    string
		body    string
		mention []string
	}{
		{"empty body", ``, []string{"empty"}},
		{"whitespace body", " \n\t ", []string{"empty"}},
		{"top-level array", `[{"workflow":"w",` + okMsgs + `}]`, []string{"JSON object"}},
		{"top-level string", `"w"`, []string{"JSON object"}},
		{"top-level null", `null`, []string{"JSON object"}},
		{"top-level number", `42`, []string{"JSON object"}},
		{"truncated", `{"workflow":"w",`, []string{"malformed JSON"}},
		{"missing colon", `{"workflow" "w"}`, []string{"malformed JSON"}},
		{"single quotes", `{'workflow':'w'}`, []string{"malformed JSON"}},
		{"trailing comma", `{"workflow":"w",}`, []string{"malformed JSON"}},
		{"second object", `{"workflow":"w",` + okMsgs + `} {}`, []string{"more than one"}},
		{"trailing brace", `{"workflow":"w",` + okMsgs + `}}`, []string{"after the JSON object"}},
		{"trailing word", `{"workflow":"w",` + okMsgs + `} x`, []string{"JSON"}},
		{"workflow is a number", `{"workflow":7,` + okMsgs + `}`, []string{`"workflow"`, "string"}},
		{"workflow is an object", `{"workflow":{"name":"w"},` + okMsgs + `}`, []string{`"workflow"`, "string"}},
		{"messages is an object", `{"workflow":"w","messages":{"role":"user"}}`, []string{`"messages"`, "array"}},
		{"messages is a string", `{"workflow":"w","messages":"hi"}`, []string{`"messages"`, "array"}},
		{"message is a string", `{"workflow":"w","messages":["hi"]}`, []string{"messages"}},
		{"role is a number", `{"workflow":"w","messages":[{"role":1,"content":"x"}]}`, []string{"messages", "role", "string"}},
		{"content is a number", `{"workflow":"w","messages":[{"role":"user","content":5}]}`, []string{"messages", "content", "string"}},
		{"webhook_id is a number", `{"workflow":"w",` + okMsgs + `,"webhook_id":5}`, []string{`"webhook_id"`, "string"}},
		{"missing workflow", `{` + okMsgs + `}`, []string{"workflow", "required"}},
		{"empty workflow", `{"workflow":"",` + okMsgs + `}`, []string{"workflow", "required"}},
		{"null workflow", `{"workflow":null,` + okMsgs + `}`, []string{"workflow", "required"}},
		{"missing messages", `{"workflow":"w"}`, []string{"messages", "required"}},
		{"empty messages", `{"workflow":"w","messages":[]}`, []string{"messages", "required"}},
		{"null messages", `{"workflow":"w","messages":null}`, []string{"messages", "required"}},
		{"missing role", `{"workflow":"w","messages":[{"content":"x"}]}`, []string{"messages[0].role", "required"}},
		{"bad role", `{"workflow":"w","messages":[{"role":"user","content":"a"},{"role":"tool","content":"b"}]}`, []string{"messages[1].role", `"tool"`}},
		{"role in capitals", `{"workflow":"w","messages":[{"role":"User","content":"a"}]}`, []string{"messages[0].role"}},
		{"too many messages", many, []string{"1000"}},
		{"customer_data is an array", `{"workflow":"w",` + okMsgs + `,"customer_data":[1,2]}`, []string{"customer_data", "object"}},
		{"customer_data is a string", `{"workflow":"w",` + okMsgs + `,"customer_data":"u1"}`, []string{"customer_data", "object"}},
		{"customer_data is a number", `{"workflow":"w",` + okMsgs + `,"customer_data":1}`, []string{"customer_data", "object"}},
		{"customer_data is true", `{"workflow":"w",` + okMsgs + `,"customer_data":true}`, []string{"customer_data", "object"}},
		{"metadata is an array", `{"workflow":"w",` + okMsgs + `,"metadata":["a"]}`, []string{"metadata", "object"}},
		{"metadata is a string with null customer_data", `{"workflow":"w",` + okMsgs + `,"customer_data":null,"metadata":"x"}`, []string{"metadata", "object"}},
		// metadata is kept on the record: checked even beside customer_data.
		{"metadata is an array beside customer_data", `{"workflow":"w",` + okMsgs + `,"customer_data":{"a":1},"metadata":[1]}`, []string{"metadata", "object"}},
		{"metadata is a number beside customer_data", `{"workflow":"w",` + okMsgs + `,"customer_data":{"a":1},"metadata":7}`, []string{"metadata", "object"}},
		{"metadata too deep", `{"workflow":"w",` + okMsgs + `,"customer_data":{},"metadata":{"a":` + strings.Repeat("[", 1001) + strings.Repeat("]", 1001) + `}}`, []string{"metadata", "cannot be accepted"}},
		{"webhook_url is a number", `{"workflow":"w",` + okMsgs + `,"webhook_url":5}`, []string{`"webhook_url"`, "string"}},
		{"webhook_url is relative", `{"workflow":"w",` + okMsgs + `,"webhook_url":"/webhooks/ai"}`, []string{"webhook_url", "absolute http(s) URL"}},
		{"webhook_url has no host", `{"workflow":"w",` + okMsgs + `,"webhook_url":"https:///hook"}`, []string{"webhook_url", "absolute http(s) URL"}},
		{"webhook_url is ftp", `{"workflow":"w",` + okMsgs + `,"webhook_url":"ftp://example.com/hook"}`, []string{"webhook_url", "absolute http(s) URL"}},
		{"webhook_url is not a URL", `{"workflow":"w",` + okMsgs + `,"webhook_url":"https://exa mple.com/%zz"}`, []string{"webhook_url", "absolute http(s) URL"}},
		{"webhook_url is opaque", `{"workflow":"w",` + okMsgs + `,"webhook_url":"mailto:hooks@example.com"}`, []string{"webhook_url", "absolute http(s) URL"}},
		{"webhook_url too long", `{"workflow":"w",` + okMsgs + `,"webhook_url":"https://example.com/` + strings.Repeat("a", 2048) + `"}`, []string{"webhook_url", "2048"}},
		{"delivery_method unknown", `{"workflow":"w",` + okMsgs + `,"delivery_method":"email"}`, []string{"delivery_method", `"email"`, `"webhook", "websocket"`}},
		{"delivery_method in capitals", `{"workflow":"w",` + okMsgs + `,"delivery_method":"WebSocket"}`, []string{"delivery_method", `"WebSocket"`}},
		{"delivery_method is an array", `{"workflow":"w",` + okMsgs + `,"delivery_method":["websocket"]}`, []string{`"delivery_method"`, "string"}},
		{"events is a string", `{"workflow":"w",` + okMsgs + `,"events":"task.completed"}`, []string{"events", "array of event names"}},
		{"events is an object", `{"workflow":"w",` + okMsgs + `,"events":{"task.completed":true}}`, []string{"events", "array of event names"}},
		{"events holds a number", `{"workflow":"w",` + okMsgs + `,"events":["task.completed",1]}`, []string{"events", "array of event names"}},
		{"events is empty", `{"workflow":"w",` + okMsgs + `,"events":[]}`, []string{"events is empty", "leave it out"}},
		{"events names an unknown event", `{"workflow":"w",` + okMsgs + `,"events":["task.completed","task.started"]}`, []string{"events[1]", `"task.started"`, "task.completed, task.ai_generated or webhook_received"}},
		{"events holds null", `{"workflow":"w",` + okMsgs + `,"events":[null]}`, []string{"events[0]", `""`}},
		{"events in capitals", `{"workflow":"w",` + okMsgs + `,"events":["Task.Completed"]}`, []string{"events[0]", `"Task.Completed"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeTaskRequest([]byte(tt.body))
			wantInvalidRequest(t, err, tt.mention...)
		})
	}
}

func TestDecodeTaskRequestAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		body         string
		wantCustomer string
		wantWebhook  string
		wantMessages int
	}{
		{"minimal", `{"workflow":"w",` + okMsgs + `}`, `{}`, "", 1},
		{"surrounded by whitespace", "\n  {\"workflow\":\"w\"," + okMsgs + "}\r\n", `{}`, "", 1},
		{"all roles", `{"workflow":"w","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}`, `{}`, "", 3},
		{"empty content is allowed", `{"workflow":"w","messages":[{"role":"user","content":""}]}`, `{}`, "", 1},
		{"customer_data compacted", `{"workflow":"w",` + okMsgs + `,"customer_data": { "user_id" : "u1", "n": [1, 2] } }`, `{"user_id":"u1","n":[1,2]}`, "", 1},
		{"null customer_data is empty", `{"workflow":"w",` + okMsgs + `,"customer_data":null}`, `{}`, "", 1},
		{"metadata when customer_data is absent", `{"workflow":"w",` + okMsgs + `,"metadata":{"order":"o-1"}}`, `{"order":"o-1"}`, "", 1},
		{"metadata when customer_data is null", `{"workflow":"w",` + okMsgs + `,"customer_data":null,"metadata":{"order":"o-1"}}`, `{"order":"o-1"}`, "", 1},
		{"customer_data wins over metadata", `{"workflow":"w",` + okMsgs + `,"customer_data":{"a":1},"metadata":{"b":2}}`, `{"a":1}`, "", 1},
		{"empty customer_data object", `{"workflow":"w",` + okMsgs + `,"customer_data":{}}`, `{}`, "", 1},
		{"webhook_id kept", `{"workflow":"w",` + okMsgs + `,"webhook_id":"wh_123"}`, `{}`, "wh_123", 1},
		{"unknown fields of compatible clients ignored",
			`{"workflow":"w",` + okMsgs + `,"inputs":{"x":1},"context":[1,"two",{"three":3}],"stream":true,"task_id":"t1"}`,
			`{}`, "", 1},
		{"unicode kept, escapes written as JSON.stringify does", `{"workflow":"résumé",` + okMsgs + `,"customer_data":{"name":"Zoë \u2603 <b>"}}`, `{"name":"Zoë ☃ <b>"}`, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decodeTaskRequest([]byte(tt.body))
			if err != nil {
				t.Fatalf("decodeTaskRequest: %v", err)
			}
			if r.Workflow == "" {
				t.Error("workflow is empty")
			}
			if string(r.CustomerData) != tt.wantCustomer {
				t.Errorf("customer_data = %s, want %s", r.CustomerData, tt.wantCustomer)
			}
			if r.WebhookID != tt.wantWebhook {
				t.Errorf("webhook_id = %q, want %q", r.WebhookID, tt.wantWebhook)
			}
			if len(r.Messages) != tt.wantMessages {
				t.Errorf("%d messages, want %d", len(r.Messages), tt.wantMessages)
			}
		})
	}
}

// The per-request delivery fields the hosted service's clients send:
// what each value becomes (what the endpoints are is decided later, with
// the project's endpoints).
func TestDecodeTaskRequestDeliveryFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		fields       string
		wantURL      string
		wantEvents   []string // nil: every event
		wantMethod   string
		wantMetadata string // "" = none
		wantCustomer string
	}{
		{"none", ``, "", nil, "", "", `{}`},
		{"the hosted service's chatbot sample",
			`,"delivery_method":"websocket","webhook_url":"https://api.example.com/webhook/modelriver","events":["webhook_received"],` +
				`"metadata":{"conversation_id":"c-1","timestamp":1767616496789}`,
			"https://api.example.com/webhook/modelriver", nil, "websocket", `{"conversation_id":"c-1","timestamp":1767616496789}`,
			`{"conversation_id":"c-1","timestamp":1767616496789}`},
		{"delivery_method webhook", `,"delivery_method":"webhook"`, "", nil, "webhook", "", `{}`},
		{"delivery_method empty is none", `,"delivery_method":""`, "", nil, "", "", `{}`},
		{"delivery_method null is none", `,"delivery_method":null`, "", nil, "", "", `{}`},
		{"webhook_url empty is none", `,"webhook_url":""`, "", nil, "", "", `{}`},
		{"webhook_url null is none", `,"webhook_url":null`, "", nil, "", "", `{}`},
		{"webhook_url kept as sent", `,"webhook_url":"HTTPS://Example.com:443/Hook/?a=1#top"`, "HTTPS://Example.com:443/Hook/?a=1#top", nil, "", "", `{}`},
		{"webhook_url on loopback (the address guard applies at registration)", `,"webhook_url":"http://127.0.0.1:9000/h"`, "http://127.0.0.1:9000/h", nil, "", "", `{}`},
		{"events null is every event", `,"events":null`, "", nil, "", "", `{}`},
		{"events: one type", `,"events":["task.ai_generated"]`, "", []string{"task.ai_generated"}, "", "", `{}`},
		{"events: duplicates collapse", `,"events":["task.completed","task.completed"]`, "", []string{"task.completed"}, "", "", `{}`},
		{"events: both types is every event", `,"events":["task.ai_generated","task.completed"]`, "", nil, "", "", `{}`},
		{"events: webhook_received is every event", `,"events":["task.completed","webhook_received"]`, "", nil, "", "", `{}`},
		{"metadata beside customer_data is kept apart", `,"customer_data":{"a":1},"metadata":{ "b" : [2] }`, "", nil, "", `{"b":[2]}`, `{"a":1}`},
		{"metadata null is none", `,"metadata":null`, "", nil, "", "", `{}`},
		{"metadata empty object is kept", `,"metadata":{}`, "", nil, "", `{}`, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decodeTaskRequest([]byte(`{"workflow":"w",` + okMsgs + tt.fields + `}`))
			if err != nil {
				t.Fatalf("decodeTaskRequest: %v", err)
			}
			if r.WebhookURL != tt.wantURL {
				t.Errorf("webhook_url = %q, want %q", r.WebhookURL, tt.wantURL)
			}
			if !slices.Equal(r.EventTypes, tt.wantEvents) || (r.EventTypes == nil) != (tt.wantEvents == nil) {
				t.Errorf("event types = %#v, want %#v", r.EventTypes, tt.wantEvents)
			}
			if r.DeliveryMethod != tt.wantMethod {
				t.Errorf("delivery_method = %q, want %q", r.DeliveryMethod, tt.wantMethod)
			}
			if string(r.Metadata) != tt.wantMetadata {
				t.Errorf("metadata = %s, want %s", r.Metadata, tt.wantMetadata)
			}
			if string(r.CustomerData) != tt.wantCustomer {
				t.Errorf("customer_data = %s, want %s", r.CustomerData, tt.wantCustomer)
			}
		})
	}
}

func TestDecodeTaskRequestKeepsMessages(t *testing.T) {
	t.Parallel()
	r, err := decodeTaskRequest([]byte(`{"workflow":"support","messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"Line 1\nLine \"2\""}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Workflow != "support" || r.Messages[0].Role != "system" || r.Messages[0].Content != "Be kind." ||
		r.Messages[1].Role != "user" || r.Messages[1].Content != "Line 1\nLine \"2\"" {
		t.Errorf("decoded %+v", r)
	}
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	type target struct {
		Name  string   `json:"name"`
		Count int      `json:"count"`
		Tags  []string `json:"tags"`
		On    bool     `json:"on"`
		Inner struct {
			N int `json:"n"`
		} `json:"inner"`
	}
	tests := []struct {
		name    string
		body    string
		mention []string // nil = accepted
	}{
		{"object", `{"name":"a","count":2,"tags":["x"],"on":true,"inner":{"n":1}}`, nil},
		{"unknown fields ignored", `{"name":"a","surprise":{"deep":[1,2,3]}}`, nil},
		{"empty object", `{}`, nil},
		{"empty", ``, []string{"empty"}},
		{"array", `[]`, []string{"JSON object"}},
		{"string", `"{}"`, []string{"JSON object"}},
		{"malformed", `{"name":}`, []string{"malformed JSON"}},
		{"unterminated string", `{"name":"a`, []string{"malformed JSON"}},
		{"trailing object", `{} {}`, []string{"more than one"}},
		{"trailing bracket", `{}]`, []string{"after the JSON object"}},
		{"name is a number", `{"name":1}`, []string{`"name"`, "a string", "number"}},
		{"count is a string", `{"count":"2"}`, []string{`"count"`, "a number", "string"}},
		{"count is fractional", `{"count":1.5}`, []string{`"count"`, "a number"}},
		{"count overflows", `{"count":1e400}`, []string{`"count"`}},
		{"tags is a string", `{"tags":"x"}`, []string{`"tags"`, "an array", "string"}},
		{"tags holds a number", `{"tags":[1]}`, []string{`"tags"`, "a string"}},
		{"on is a string", `{"on":"yes"}`, []string{`"on"`, "a boolean"}},
		{"inner is an array", `{"inner":[]}`, []string{`"inner"`, "an object"}},
		{"inner.n is a string", `{"inner":{"n":"1"}}`, []string{"inner.n", "a number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v target
			err := decodeJSON([]byte(tt.body), &v)
			if tt.mention == nil {
				if err != nil {
					t.Fatalf("decodeJSON(%s) = %v", tt.body, err)
				}
				return
			}
			wantInvalidRequest(t, err, tt.mention...)
		})
	}

	var v target
	if err := decodeJSON([]byte(`{"name":"a","count":2,"tags":["x","y"],"on":true,"inner":{"n":7}}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.Name != "a" || v.Count != 2 || len(v.Tags) != 2 || !v.On || v.Inner.N != 7 {
		t.Errorf("decoded %+v", v)
	}
}

func TestReadBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		body     string
		length   int64 // Content-Length; -1 = unknown (chunked)
		limit    int64
		wantCode string // "" = read
	}{
		{"within limit", `{"a":1}`, 7, 16, ""},
		{"exactly the limit", strings.Repeat("x", 16), 16, 16, ""},
		{"declared too large", strings.Repeat("x", 17), 17, 16, "payload_too_large"},
		{"chunked too large", strings.Repeat("x", 64), -1, 16, "payload_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/ai/async", bytes.NewReader([]byte(tt.body)))
			r.ContentLength = tt.length
			b, err := readBody(r, tt.limit)
			if tt.wantCode == "" {
				if err != nil || string(b) != tt.body {
					t.Fatalf("readBody = %q, %v; want the body", b, err)
				}
				return
			}
			e := apperr.As(err)
			if e == nil || e.Code != tt.wantCode || statusOf(e.Kind) != http.StatusRequestEntityTooLarge {
				t.Fatalf("readBody error = %v, want %s (413)", err, tt.wantCode)
			}
		})
	}
}

// checkTaskRequest asserts what every accepted submission guarantees the
// rest of the server.
func checkTaskRequest(tb testing.TB, body []byte, r taskRequest) {
	tb.Helper()
	if !json.Valid(body) {
		tb.Fatalf("accepted a body that is not valid JSON: %q", body)
	}
	if r.Workflow == "" {
		tb.Fatalf("accepted an empty workflow: %q", body)
	}
	if len(r.Messages) == 0 || len(r.Messages) > maxMessages {
		tb.Fatalf("accepted %d messages: %q", len(r.Messages), body)
	}
	for i, m := range r.Messages {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			tb.Fatalf("accepted messages[%d].role %q: %q", i, m.Role, body)
		}
	}
	if len(r.CustomerData) == 0 || r.CustomerData[0] != '{' {
		tb.Fatalf("customer_data %q is not an object: %q", r.CustomerData, body)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(r.CustomerData, &obj); err != nil || obj == nil {
		tb.Fatalf("customer_data %q does not decode as an object (%v): %q", r.CustomerData, err, body)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, r.CustomerData); err != nil || !bytes.Equal(compact.Bytes(), r.CustomerData) {
		tb.Fatalf("customer_data %q is not compact: %q", r.CustomerData, body)
	}
	if r.Metadata != nil {
		var md map[string]json.RawMessage
		if err := json.Unmarshal(r.Metadata, &md); err != nil || md == nil {
			tb.Fatalf("metadata %q is not an object (%v): %q", r.Metadata, err, body)
		}
	}
	if r.WebhookURL != "" {
		if _, ok := project.EndpointURLKey(r.WebhookURL); !ok || len(r.WebhookURL) > maxWebhookURL {
			tb.Fatalf("accepted webhook_url %q: %q", r.WebhookURL, body)
		}
	}
	if r.DeliveryMethod != "" && !slices.Contains(deliveryMethods, r.DeliveryMethod) {
		tb.Fatalf("accepted delivery_method %q: %q", r.DeliveryMethod, body)
	}
	if len(r.EventTypes) >= len(project.Events) {
		tb.Fatalf("event types %q: every type must be nil: %q", r.EventTypes, body)
	}
	for _, e := range r.EventTypes {
		if !slices.Contains(project.Events, e) {
			tb.Fatalf("accepted event %q: %q", e, body)
		}
	}
}

// checkRejection asserts an error is a client error, never an internal one.
func checkRejection(tb testing.TB, body []byte, err error) {
	tb.Helper()
	e := apperr.As(err)
	if e == nil || e.Kind != apperr.Invalid || e.Code != "invalid_request" || e.Message == "" {
		tb.Fatalf("rejection of %q is %v, want invalid_request with a message", body, err)
	}
}

func FuzzDecodeTaskRequest(f *testing.F) {
	for _, s := range []string{
		`{"workflow":"w","messages":[{"role":"user","content":"hi"}]}`,
		`{"workflow":"w","messages":[{"role":"user","content":"hi"}],"metadata":{"a":1},"customer_data":null}`,
		`{"workflow":"w","messages":[{"role":"user","content":"hi"}],"delivery_method":"websocket","webhook_url":"https://a.example/h","events":["webhook_received"],"metadata":{"m":1}}`,
		`{"workflow":"w","messages":[{"role":"user","content":"hi"}],"events":["task.ai_generated","task.completed","task.completed"]}`,
		`{"workflow":"w","messages":[{"role":"tool","content":"hi"}]}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeTaskRequest(body)
		if err != nil {
			checkRejection(t, body, err)
			return
		}
		checkTaskRequest(t, body, r)
	})
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":null}]}`, `{} {}`, `[1]`, ` {"x":"\u00e9"} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// Into a map every valid object fits, so the decoder must accept
		// exactly the bodies that are one JSON object.
		var m map[string]any
		err := decodeJSON(body, &m)
		trimmed := bytes.TrimSpace(body)
		isObject := json.Valid(trimmed) && len(trimmed) > 0 && trimmed[0] == '{'
		switch {
		case err == nil && !isObject:
			t.Fatalf("accepted %q, which is not one JSON object", body)
		case err != nil && isObject:
			t.Fatalf("refused the JSON object %q: %v", body, err)
		case err != nil:
			checkRejection(t, body, err)
		case m == nil:
			t.Fatalf("accepted %q but decoded nothing", body)
		}

		// Into a struct, type errors are client errors with a message.
		var r taskRequest
		if err := decodeJSON(body, &r); err != nil {
			checkRejection(t, body, err)
		} else if !isObject {
			t.Fatalf("struct decode accepted %q, which is not one JSON object", body)
		}
	})
}

// A callback is accepted as exactly one of a success (data present, not
// null) or an error (a non-empty code); what is accepted can be sent on.
func FuzzDecodeCallback(f *testing.F) {
	for _, s := range []string{
		`{"data":{"title":"Inception","id":7},"task_id":"t1","metadata":{"ms":234}}`,
		`{"error":"processing_failed","message":"Database connection timeout"}`,
		`{"data":null}`, `{"error":""}`, `{"error":5}`, `{"task_id":"x"}`, `{"data":1e400}`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cb, err := decodeCallback(body)
		if err != nil {
			checkRejection(t, body, err)
			return
		}
		if !json.Valid(cb.Canonical) {
			t.Fatalf("canonical form of %q is not JSON: %q", body, cb.Canonical)
		}
		switch {
		case cb.Error != "":
			if cb.Data != nil {
				t.Fatalf("%q is both an error and a success", body)
			}
		case cb.Data == nil || string(cb.Data) == "null" || !json.Valid(cb.Data):
			t.Fatalf("accepted %q as a success without usable data: %q", body, cb.Data)
		}
		for _, raw := range []json.RawMessage{cb.TaskID, cb.Metadata} {
			if raw != nil && !json.Valid(raw) {
				t.Fatalf("accepted %q with invalid JSON %q", body, raw)
			}
		}
	})
}
