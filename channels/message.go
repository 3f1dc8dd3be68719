package channels

import (
	"encoding/json"
	"errors"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/jscanon"
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
