package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/channels"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/jscanon"
	"github.com/riverhub/riverhub/project"
)

// readBody reads a request body within the size limit.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(limit)
		}
		return nil, apperr.Invalidf("cannot read the request body")
	}
	return b, nil
}

// decodeJSON decodes exactly one JSON object into v, with errors a client
// can act on. Unknown fields are ignored: clients of compatible services
// send fields riverhub does not use.
func decodeJSON(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return apperr.Invalidf("request body is empty; send a JSON object")
	}
	if body[0] != '{' {
		return apperr.Invalidf("request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return apperr.Invalidf("field %q must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		case errors.As(err, &te):
			return apperr.Invalidf("request body has a value of the wrong type (%s)", te.Value)
		case errors.As(err, &se):
			return apperr.Invalidf("malformed JSON at byte %d: %v", se.Offset, se)
		default:
			return apperr.Invalidf("malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return apperr.Invalidf("request body holds more than one JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return apperr.Invalidf("request body holds data after the JSON object")
	}
	return nil
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	}
	return "another type"
}

// taskRequest is the body of POST /v1/ai and /v1/ai/async.
type taskRequest struct {
	Workflow     string          `json:"workflow"`
	Messages     []ai.Message    `json:"messages"`
	CustomerData json.RawMessage `json:"customer_data"`
	Metadata     json.RawMessage `json:"metadata"`
	WebhookID    string          `json:"webhook_id"`
	// Per-request delivery fields of the hosted service's clients
	// (docs/api.md, "Per-request delivery").
	WebhookURL     string          `json:"webhook_url"`
	Events         json.RawMessage `json:"events"`
	DeliveryMethod string          `json:"delivery_method"`
	// Stream, when given, decides whether the answer streams into the
	// room; else the workflow's stream does.
	Stream *bool `json:"stream"`

	// EventTypes are the webhook event types events asks for; nil: all.
	EventTypes []string `json:"-"`
}

const maxMessages = 1000

// Values of the per-request delivery fields.
const (
	// eventWebhookReceived is what the hosted service's sample backends
	// send in events ("the webhook my backend receives"): every type.
	eventWebhookReceived = "webhook_received"
	maxWebhookURL        = 2048 // as for a registered endpoint
)

var deliveryMethods = []string{"webhook", "websocket"}

// decodeTaskRequest decodes and checks a task submission.
func decodeTaskRequest(body []byte) (taskRequest, error) {
	var r taskRequest
	if err := decodeJSON(body, &r); err != nil {
		return r, err
	}
	if r.Workflow == "" {
		return r, apperr.Invalidf("workflow is required")
	}
	if len(r.Messages) == 0 {
		return r, apperr.Invalidf("messages is required: a non-empty array of {role, content}")
	}
	if len(r.Messages) > maxMessages {
		return r, apperr.Invalidf("at most %d messages", maxMessages)
	}
	for i, m := range r.Messages {
		switch m.Role {
		case "system", "user", "assistant":
		case "":
			return r, apperr.Invalidf("messages[%d].role is required (system, user or assistant)", i)
		default:
			return r, apperr.Invalidf("messages[%d].role %q is not one of system, user, assistant", i, m.Role)
		}
	}
	cd, err := objectOrNull("customer_data", r.CustomerData)
	if err != nil {
		return r, err
	}
	// metadata is kept on the channel record, so it is checked as
	// customer_data is, whether or not it stands in for it.
	md, err := objectOrNull("metadata", r.Metadata)
	if err != nil {
		return r, err
	}
	r.Metadata = md
	if cd == nil {
		cd = md
	}
	if cd == nil {
		cd = json.RawMessage("{}")
	}
	r.CustomerData = cd
	if err := checkWebhookURL(r.WebhookURL); err != nil {
		return r, err
	}
	if r.DeliveryMethod != "" && !slices.Contains(deliveryMethods, r.DeliveryMethod) {
		return r, apperr.Invalidf(`delivery_method %q is not one of "webhook", "websocket" (both deliver the same way: every message to the channel's socket room, webhooks to the endpoints)`, r.DeliveryMethod)
	}
	if r.EventTypes, err = eventTypes(r.Events); err != nil {
		return r, err
	}
	return r, nil
}

// checkWebhookURL checks the form of webhook_url ("" is none); whether it
// is one of the project's endpoints is decided with the project's
// endpoints.
func checkWebhookURL(u string) error {
	if u == "" {
		return nil
	}
	if len(u) > maxWebhookURL {
		return apperr.Invalidf("webhook_url is longer than %d characters", maxWebhookURL)
	}
	if _, ok := project.EndpointURLKey(u); !ok {
		return apperr.Invalidf("webhook_url must be an absolute http(s) URL such as https://api.example.com/webhooks/ai, the URL of one of the project's webhook endpoints")
	}
	return nil
}

// eventTypes reads events: null or absent is every type (nil), else a
// non-empty array of known event names; webhook_received stands for every
// type.
func eventTypes(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var names []string
	if raw[0] != '[' || json.Unmarshal(raw, &names) != nil {
		return nil, apperr.Invalidf(`events must be an array of event names, such as ["task.completed"]`)
	}
	if len(names) == 0 {
		return nil, apperr.Invalidf("events is empty: leave it out to get every webhook event, or name task.completed and/or task.ai_generated")
	}
	var out []string
	all := false
	for i, e := range names {
		switch {
		case e == eventWebhookReceived:
			all = true
		case slices.Contains(project.Events, e):
			if !slices.Contains(out, e) {
				out = append(out, e)
			}
		default:
			return nil, apperr.Invalidf("events[%d] %q is not a webhook event: use task.completed, task.ai_generated or webhook_received (every event)", i, e)
		}
	}
	if all || len(out) == len(project.Events) {
		return nil, nil
	}
	return out, nil
}

// objectOrNull accepts a JSON object (compacted) or absence/null (nil).
func objectOrNull(field string, raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, apperr.Invalidf("%s must be a JSON object", field)
	}
	// Canonical now, so that every payload that carries it can be encoded.
	out, err := jscanon.Canonical(raw)
	if err != nil {
		return nil, apperr.Invalidf("%s cannot be accepted: %v", field, err)
	}
	return out, nil
}

// decodeCallback decodes a backend's callback: an error ({error, message?},
// error a non-empty string) or a success ({data, task_id?, metadata?}, data
// present and not null).
func decodeCallback(body []byte) (channels.CallbackBody, error) {
	var cb channels.CallbackBody
	var m map[string]json.RawMessage
	if err := decodeJSON(body, &m); err != nil {
		return cb, err
	}
	canon, err := jscanon.Canonical(bytes.TrimSpace(body))
	if err != nil {
		return cb, apperr.Invalidf("the callback cannot be accepted: %v", err)
	}
	cb.Canonical = canon
	isNull := func(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }
	if raw, ok := m["error"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &cb.Error) != nil || cb.Error == "" {
			return cb, apperr.Invalidf("error must be a non-empty string (the code of your backend's failure)")
		}
		if raw, ok := m["message"]; ok && !isNull(raw) {
			if json.Unmarshal(raw, &cb.Message) != nil {
				return cb, apperr.Invalidf("message must be a string")
			}
		}
		return cb, nil
	}
	if isNull(m["data"]) {
		return cb, apperr.Invalidf(`data is required: send {"data": ...} with your result, or {"error": "<code>", "message": "..."}`)
	}
	// Canonical, as every payload that carries them.
	for _, f := range []struct {
		dst *json.RawMessage
		key string
	}{{&cb.Data, "data"}, {&cb.TaskID, "task_id"}, {&cb.Metadata, "metadata"}} {
		if raw := m[f.key]; !isNull(raw) {
			if *f.dst, err = jscanon.Canonical(raw); err != nil {
				return cb, apperr.Invalidf("%s cannot be accepted: %v", f.key, err)
			}
		}
	}
	if string(cb.Data) == "null" { // e.g. 1e400, which JSON.stringify writes as null
		return cb, apperr.Invalidf("data cannot be accepted: it would be sent on as null")
	}
	return cb, nil
}
