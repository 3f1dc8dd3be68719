package channels

import (
	"encoding/json"
	"errors"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/jscanon"
)

// ErrorBody is the error object of a failed channel's message.
type ErrorBody struct {
	Message string `json:"message"`
	Code    string `json:"code"`
}

type meta struct {
	Provider   string       `json:"provider"`
	Model      string       `json:"model"`
	Tokens     ai.Tokens    `json:"tokens"`
	DurationMS int64        `json:"duration_ms"`
	Attempts   []ai.Attempt `json:"attempts"`
}

// completed is the task.completed payload; the room's success and error
// messages carry the same fields.
type completed struct {
	Type         string          `json:"type"`
	Workflow     string          `json:"workflow"`
	Status       Status          `json:"status"`
	ChannelID    string          `json:"channel_id"`
	Data         json.RawMessage `json:"data"`
	Error        *ErrorBody      `json:"error,omitempty"`
	Meta         meta            `json:"meta"`
	CustomerData json.RawMessage `json:"customer_data"`
	Timestamp    string          `json:"timestamp"`
}

// Error codes of a failed generation.
const (
	CodeGenerationFailed = "generation_failed"
)

// completedMessage builds the final payload of a standard workflow.
func completedMessage(t *Task, res ai.Result, runErr error, at string) (Status, []byte, error) {
	m := completed{
		Type: "task.completed", Workflow: t.Workflow.Name, ChannelID: t.ChannelID,
		Data: res.Data, CustomerData: t.CustomerData, Timestamp: at,
		Meta: meta{Provider: res.Provider, Model: res.Model, Tokens: res.Tokens, DurationMS: res.DurationMS, Attempts: res.Attempts},
	}
	if m.Meta.Attempts == nil {
		m.Meta.Attempts = []ai.Attempt{}
	}
	if len(m.CustomerData) == 0 {
		m.CustomerData = json.RawMessage("{}")
	}
	m.Status = StatusSuccess
	if runErr != nil {
		m.Status = StatusError
		m.Data = nil
		msg := runErr.Error()
		if errors.Is(runErr, ai.ErrAllFailed) && len(res.Attempts) > 0 {
			last := res.Attempts[len(res.Attempts)-1]
			msg, m.Meta.Provider, m.Meta.Model = last.Error, last.Provider, last.Model
		}
		m.Error = &ErrorBody{Message: msg, Code: CodeGenerationFailed}
	}
	if m.Data == nil {
		m.Data = json.RawMessage("null")
	}
	b, err := encode(m)
	return m.Status, b, err
}

// encode writes the payload as JSON.stringify would re-serialise it: the
// bytes are signed, and receivers verify HMAC(JSON.stringify(body)).
func encode(v any) ([]byte, error) { return jscanon.Marshal(v) }

// Error codes of event-driven channels.
const (
	CodeCallbackTimeout = "callback_timeout"
)

// hookMeta is the meta object of task.ai_generated and of the room's
// ai_generated message.
type hookMeta struct {
	WorkflowID   string `json:"workflow_id"`
	WorkflowName string `json:"workflow_name"`
	ProjectID    string `json:"project_id"`
	Provider     string `json:"provider"`
	Model        string `json:"model"`
}

type aiResponse struct {
	Data json.RawMessage `json:"data"`
}

// aiGenerated is the task.ai_generated webhook body, field for field as the
// spec shows it.
type aiGenerated struct {
	Type             string          `json:"type"`
	Event            string          `json:"event"`
	ChannelID        string          `json:"channel_id"`
	AIResponse       aiResponse      `json:"ai_response"`
	CallbackURL      string          `json:"callback_url"`
	CallbackRequired bool            `json:"callback_required"`
	Meta             hookMeta        `json:"meta"`
	CustomerData     json.RawMessage `json:"customer_data"`
	Timestamp        string          `json:"timestamp"`
}

// roomGenerated is the room's message once an event-driven generation is
// done.
type roomGenerated struct {
	Status    Status   `json:"status"`
	ChannelID string   `json:"channel_id"`
	EventName string   `json:"event_name"`
	Meta      hookMeta `json:"meta"`
	Timestamp string   `json:"timestamp"`
}

// roomSimulating tells a playground's room that the callback is being
// simulated.
type roomSimulating struct {
	Status    string `json:"status"`
	ChannelID string `json:"channel_id"`
	EventName string `json:"event_name"`
	Message   string `json:"message"`
	Timestamp string `json:"timestamp"`
}

// StatusSimulating is the status of the playground's "simulating backend
// callback" message (not a channel state).
const StatusSimulating = "simulating_callback"

// roomCompleted is the room's final message after a successful callback
// (or the playground's simulated one).
type roomCompleted struct {
	Status           Status          `json:"status"`
	ChannelID        string          `json:"channel_id"`
	EventName        string          `json:"event_name"`
	Data             json.RawMessage `json:"data"`
	AIResponse       aiResponse      `json:"ai_response"`
	CustomerData     json.RawMessage `json:"customer_data"`
	TaskID           json.RawMessage `json:"task_id"`
	CallbackMetadata json.RawMessage `json:"callback_metadata"`
	Simulated        bool            `json:"simulated,omitempty"`
	Timestamp        string          `json:"timestamp"`
}

// roomFailed is the room's final message after an error callback or the
// callback deadline.
type roomFailed struct {
	Status       Status          `json:"status"`
	ChannelID    string          `json:"channel_id"`
	EventName    string          `json:"event_name"`
	Error        ErrorBody       `json:"error"`
	CustomerData json.RawMessage `json:"customer_data"`
	Timestamp    string          `json:"timestamp"`
}

func orNull(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return b
}

func orEmpty(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("{}")
	}
	return b
}

// simulatedData is the playground's enrichment of the generated data: an
// object gains "simulated": true and a note of what a backend would add;
// anything else is wrapped.
func simulatedData(data json.RawMessage, at string) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil || obj == nil {
		obj = map[string]json.RawMessage{"value": orNull(data)}
	}
	obj["simulated"] = json.RawMessage("true")
	obj["enriched_at"], _ = json.Marshal(at)
	obj["enrichment"] = json.RawMessage(`{"source":"playground","note":"a real backend adds its own data here before it calls back"}`)
	b, _ := json.Marshal(obj)
	return b
}

// A callback's final message is built by callback.lua, in the
// compare-and-set that settles the channel, so that the callback needs no
// read of the channel first: from the pieces the generation fixes
// (callbackParts, kept in the record's cb_parts) and those the callback
// brings (callbackFrame), as
//
//	head + event + mid [+ ai + ","] + customer + tail
//
// which is byte for byte encode(roomCompleted{...}) (with ai) or
// encode(roomFailed{...}) (without): each piece is members of a canonical
// JSON object, whose keys are fixed names that keep their order
// (TestCallbackMessageFromParts).

// callbackParts are the event name, the AI's response and the customer
// data as members of a final message ("key":value), one per line
// (canonical JSON holds no raw newline).
func callbackParts(event string, data, customer json.RawMessage) (string, error) {
	ev, err := members(struct {
		EventName string `json:"event_name"`
	}{event})
	if err != nil {
		return "", err
	}
	ai, err := members(struct {
		AIResponse aiResponse `json:"ai_response"`
	}{aiResponse{orNull(data)}})
	if err != nil {
		return "", err
	}
	cd, err := members(struct {
		CustomerData json.RawMessage `json:"customer_data"`
	}{orEmpty(customer)})
	if err != nil {
		return "", err
	}
	return string(ev) + "\n" + string(ai) + "\n" + string(cd), nil
}

// callbackFrame is what a callback brings to its channel's final message
// (see callbackParts): its status, and the pieces around the stored ones.
type callbackFrame struct {
	status          Status
	head, mid, tail []byte
}

func newCallbackFrame(cid string, cb CallbackBody, at string) (callbackFrame, error) {
	f := callbackFrame{status: StatusCompleted}
	var mid, tail any
	if cb.Error != "" {
		text := cb.Message
		if text == "" {
			text = cb.Error
		}
		f.status = StatusError
		mid = struct {
			Error ErrorBody `json:"error"`
		}{ErrorBody{Message: text, Code: cb.Error}}
		tail = struct {
			Timestamp string `json:"timestamp"`
		}{at}
	} else {
		mid = struct {
			Data json.RawMessage `json:"data"`
		}{cb.Data}
		tail = struct {
			TaskID           json.RawMessage `json:"task_id"`
			CallbackMetadata json.RawMessage `json:"callback_metadata"`
			Timestamp        string          `json:"timestamp"`
		}{orNull(cb.TaskID), orNull(cb.Metadata), at}
	}
	head := struct {
		Status    Status `json:"status"`
		ChannelID string `json:"channel_id"`
	}{f.status, cid}
	var m [3][]byte
	for i, v := range []any{head, mid, tail} {
		var err error
		if m[i], err = members(v); err != nil {
			return f, apperr.Invalidf("the callback cannot be sent on: %v", err)
		}
	}
	f.head = append(append([]byte{'{'}, m[0]...), ',')
	f.mid = append(append([]byte{','}, m[1]...), ',')
	f.tail = append(append([]byte{','}, m[2]...), '}')
	return f, nil
}

// members is v's encoding without its braces: v is a struct.
func members(v any) ([]byte, error) {
	b, err := encode(v)
	if err != nil {
		return nil, err
	}
	return b[1 : len(b)-1], nil
}
