package channels

import (
	"encoding/json"
	"slices"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/project"
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

// final reports whether st ends a channel: its room's last message has
// this status.
func (st Status) final() bool {
	return st == StatusSuccess || st == StatusError || st == StatusCompleted
}

// Task is everything a worker needs to run a request, stored with the
// channel so that a workflow edited or deleted after submission does not
// change a request already accepted.
type Task struct {
	ChannelID    string           `json:"channel_id"`
	ProjectID    string           `json:"project_id"`
	Workflow     project.Workflow `json:"workflow"`
	Schema       json.RawMessage  `json:"schema,omitempty"` // the structured output's JSON Schema
	SchemaName   string           `json:"schema_name,omitempty"`
	Messages     []ai.Message     `json:"messages"`
	CustomerData json.RawMessage  `json:"customer_data"` // a JSON object; {} when none
	// WebhookID is the one endpoint the request chose (webhook_id, or the
	// first of WebhookIDs, so that a node of an earlier version that reads
	// the task sends to no endpoint the request did not name).
	WebhookID string `json:"webhook_id,omitempty"`
	// WebhookIDs are the endpoints the request chose (webhook_url may
	// name several registered with the same URL); none: every subscribed
	// one.
	WebhookIDs []string `json:"webhook_ids,omitempty"`
	// Events are the webhook event types the request wants (events);
	// none: every type.
	Events []string `json:"events,omitempty"`
	// DeliveryMethod is the request's delivery_method, kept for the
	// console; it changes nothing (docs/api.md).
	DeliveryMethod string `json:"delivery_method,omitempty"`
	// Metadata is the request's metadata object, stored in a field of its
	// own on the channel record (shown with the channel, sent nowhere), so
	// not in the task's JSON.
	Metadata json.RawMessage `json:"-"`
	// Playground runs send no webhook; an event-driven one completes with
	// a simulated callback after the playground delay.
	Playground bool `json:"playground,omitempty"`
	// Stream: the answer streams into the room as it is written (events
	// chunk and chunk_reset, stream.go).
	Stream bool `json:"stream,omitempty"`
	// rerun: an earlier run of the task was cut short (it may have
	// streamed a partial answer).
	rerun bool
}

// endpoints are the endpoints the task's webhooks go to; nil: every
// endpoint subscribed to the event.
func (t *Task) endpoints() []string {
	if len(t.WebhookIDs) > 0 {
		return t.WebhookIDs
	}
	if t.WebhookID != "" {
		return []string{t.WebhookID}
	}
	return nil
}

// sends reports whether the task's request wants webhooks of eventType.
func sends(events []string, eventType string) bool {
	return len(events) == 0 || slices.Contains(events, eventType)
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
	Message   json.RawMessage `json:"message"`  // the latest payload pushed to the room; null before
	Metadata  json.RawMessage `json:"metadata"` // the request's metadata object; null without one
}

// Entry is one line of a channel's audit timeline.
type Entry struct {
	At string `json:"at"`
	// request, generating, requeued, waiting, ai_attempt, completed, failed,
	// ai_generated, callback, callback_rejected, timeout, broadcast (a
	// message published to the room: its status)
	Type string `json:"type"`
	// ai_attempt (and waiting: provider, model, reason)
	Provider   string `json:"provider,omitempty"`
	Model      string `json:"model,omitempty"`
	DurationMS *int64 `json:"duration_ms,omitempty"`
	Success    *bool  `json:"success,omitempty"`
	Error      string `json:"error,omitempty"`
	StatusCode int    `json:"status_code,omitempty"` // the provider's HTTP status, when it answered an error
	WaitMS     *int64 `json:"wait_ms,omitempty"`     // waited before the attempt (retry delay, rate-limit permit)
	Skipped    bool   `json:"skipped,omitempty"`     // not tried: the provider was cooling down
	Reason     string `json:"reason,omitempty"`      // waiting: rate_limit or retry
	// request
	Workflow string `json:"workflow,omitempty"`
	Node     string `json:"node,omitempty"`
	// request: the delivery it asked for (webhook_id or webhook_url,
	// events, delivery_method)
	WebhookIDs     []string `json:"webhook_ids,omitempty"`
	Events         []string `json:"events,omitempty"`
	DeliveryMethod string   `json:"delivery_method,omitempty"`
	// ai_generated (the callback deadline), callback, callback_rejected,
	// timeout
	Deadline  string          `json:"deadline,omitempty"`
	Status    Status          `json:"status,omitempty"`
	Code      string          `json:"code,omitempty"`
	Callback  json.RawMessage `json:"callback,omitempty"` // the body the backend sent
	Answer    int             `json:"answer,omitempty"`   // the HTTP status it was given
	Simulated bool            `json:"simulated,omitempty"`
}
