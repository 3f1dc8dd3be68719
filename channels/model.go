package channels

import (
	"encoding/json"
	"time"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/console"
)

// Status is a channel's state, in the vocabulary of the socket messages.
type Status string

const (
	StatusPending    Status = "pending"
	StatusGenerating Status = "generating"
	StatusSuccess    Status = "success"
	StatusError      Status = "error"
	// StatusAIGenerated: an event-driven channel's generation is done and
	// it awaits its backend's callback (until its deadline).
	StatusAIGenerated Status = "ai_generated"
	// StatusCompleted: the backend called back with its data.
	StatusCompleted Status = "completed"
)

// Task is everything a worker needs to run a request, stored with the
// channel so that a workflow edited or deleted after submission does not
// change a request already accepted.
type Task struct {
	ChannelID    string           `json:"channel_id"`
	ProjectID    string           `json:"project_id"`
	Workflow     console.Workflow `json:"workflow"`
	Schema       json.RawMessage  `json:"schema,omitempty"` // the structured output's JSON Schema
	SchemaName   string           `json:"schema_name,omitempty"`
	Messages     []ai.Message     `json:"messages"`
	CustomerData json.RawMessage  `json:"customer_data"` // a JSON object; {} when none
	WebhookID    string           `json:"webhook_id,omitempty"`
	// Playground runs send no webhook; an event-driven one completes with
	// a simulated callback after the playground delay.
	Playground bool `json:"playground,omitempty"`
}

// View is the public state of a channel (the polling fallback).
type View struct {
	ChannelID string          `json:"channel_id"`
	ProjectID string          `json:"project_id"`
	Workflow  string          `json:"workflow"`
	EventName *string         `json:"event_name"`
	Status    Status          `json:"status"`
	CreatedAt string          `json:"created_at"`
	UpdatedAt string          `json:"updated_at"`
	Message   json.RawMessage `json:"message"` // the latest payload pushed to the room; null before
}

// Entry is one line of a channel's audit timeline.
type Entry struct {
	At string `json:"at"`
	// request, generating, requeued, ai_attempt, completed, failed,
	// ai_generated, callback, callback_rejected, timeout, broadcast (a
	// message published to the room: its status)
	Type string `json:"type"`
	// ai_attempt
	Provider   string `json:"provider,omitempty"`
	Model      string `json:"model,omitempty"`
	DurationMS *int64 `json:"duration_ms,omitempty"`
	Success    *bool  `json:"success,omitempty"`
	Error      string `json:"error,omitempty"`
	// request
	Workflow string `json:"workflow,omitempty"`
	Node     string `json:"node,omitempty"`
	// ai_generated (the callback deadline), callback, callback_rejected,
	// timeout
	Deadline  string          `json:"deadline,omitempty"`
	Status    Status          `json:"status,omitempty"`
	Code      string          `json:"code,omitempty"`
	Callback  json.RawMessage `json:"callback,omitempty"` // the body the backend sent
	Answer    int             `json:"answer,omitempty"`   // the HTTP status it was given
	Simulated bool            `json:"simulated,omitempty"`
}

// Event is a webhook event for the dispatch engine.
type Event struct {
	Type      string          // task.completed, task.ai_generated
	ProjectID string          //
	ChannelID string          //
	WebhookID string          // only this endpoint when set, else every subscribed one
	Body      json.RawMessage // the exact body to sign and send
}

// timeFormat is RFC 3339 in UTC with milliseconds, as payloads carry it.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func stamp(t time.Time) string { return t.UTC().Format(timeFormat) }
