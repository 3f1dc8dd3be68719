package project

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/wire"
)

// Workflow is a named recipe for an AI task: which provider and model, the
// fallbacks, the structured output, and for event-driven workflows the
// event name and callback deadline.
type Workflow struct {
	ID                     string      `json:"id"`
	Name                   string      `json:"name"`
	EventName              string      `json:"event_name,omitempty"`
	Provider               string      `json:"provider"`
	Model                  string      `json:"model"`
	StructuredOutputID     string      `json:"structured_output_id,omitempty"`
	Fallbacks              []ai.Target `json:"fallbacks"`
	SystemPrompt           string      `json:"system_prompt,omitempty"`
	CallbackTimeoutSeconds int         `json:"callback_timeout_seconds,omitempty"`
	Mock                   *ai.Mock    `json:"mock,omitempty"`
	Stream                 bool        `json:"stream,omitempty"` // answers stream into the room (chunk events) unless a request says otherwise
	CreatedAt              time.Time   `json:"created_at"`
	UpdatedAt              time.Time   `json:"updated_at"`
}

// WorkflowInput is what a client sends to create or replace a workflow.
type WorkflowInput struct {
	Name                   string      `json:"name"`
	EventName              string      `json:"event_name"`
	Provider               string      `json:"provider"`
	Model                  string      `json:"model"`
	StructuredOutputID     string      `json:"structured_output_id"`
	Fallbacks              []ai.Target `json:"fallbacks"`
	SystemPrompt           string      `json:"system_prompt"`
	CallbackTimeoutSeconds int         `json:"callback_timeout_seconds"`
	Mock                   *ai.Mock    `json:"mock"`
	Stream                 bool        `json:"stream"`
}

var (
	namePattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)
	eventPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:\-]*$`)
)

func checkName(field, v string, max int, free bool) error {
	switch {
	case v == "":
		return apperr.Invalidf("%s is required", field)
	case len(v) > max:
		return apperr.Invalidf("%s is longer than %d characters", field, max)
	case !free && !namePattern.MatchString(v):
		return apperr.Invalidf("%s may hold only letters, digits, '_', '-' and '.', starting with a letter or digit", field)
	}
	return nil
}

const maxFallbacks = 8

func (s *Store) validateWorkflow(ctx context.Context, pid string, in *WorkflowInput) error {
	if err := checkName("name", in.Name, 128, false); err != nil {
		return err
	}
	if in.EventName != "" && (len(in.EventName) > 128 || !eventPattern.MatchString(in.EventName)) {
		return apperr.Invalidf("event_name may hold only letters, digits, '_', '-', '.' and ':' (at most 128)")
	}
	if in.Model == "" && in.Provider == "mock" {
		in.Model = "mock"
	}
	if err := checkTarget("", ai.Target{Provider: in.Provider, Model: in.Model}); err != nil {
		return err
	}
	if len(in.Fallbacks) > maxFallbacks {
		return apperr.Invalidf("at most %d fallbacks", maxFallbacks)
	}
	for i := range in.Fallbacks {
		if in.Fallbacks[i].Model == "" && in.Fallbacks[i].Provider == "mock" {
			in.Fallbacks[i].Model = "mock"
		}
		if err := checkTarget(fmt.Sprintf("fallbacks[%d].", i), in.Fallbacks[i]); err != nil {
			return err
		}
	}
	if in.Fallbacks == nil {
		in.Fallbacks = []ai.Target{}
	}
	if in.CallbackTimeoutSeconds < 0 || in.CallbackTimeoutSeconds > 86400 {
		return apperr.Invalidf("callback_timeout_seconds must be between 1 and 86400")
	}
	if len(in.SystemPrompt) > 64<<10 {
		return apperr.Invalidf("system_prompt is longer than 64 KiB")
	}
	if in.Mock != nil {
		if in.Mock.DelayMS < 0 || in.Mock.DelayMS > 600_000 {
			return apperr.Invalidf("mock.delay_ms must be between 0 and 600000")
		}
		if len(in.Mock.Response) > 0 && !json.Valid(in.Mock.Response) {
			return apperr.Invalidf("mock.response must be JSON")
		}
		for _, f := range []struct {
			name   string
			v, max int
		}{{"stream_chunk_chars", in.Mock.StreamChunkChars, 65536}, {"stream_interval_ms", in.Mock.StreamIntervalMS, 60_000}, {"stream_fail_after", in.Mock.StreamFailAfter, 1 << 20}} {
			if f.v < 0 || f.v > f.max {
				return apperr.Invalidf("mock.%s must be between 0 and %d", f.name, f.max)
			}
		}
	}
	if in.StructuredOutputID != "" {
		if _, err := s.GetOutput(ctx, pid, in.StructuredOutputID); err != nil {
			if e := apperr.As(err); e != nil && e.Kind == apperr.NotFound {
				return apperr.Invalidf("structured_output_id %q does not exist in this project", in.StructuredOutputID)
			}
			return err
		}
	}
	return nil
}

func checkTarget(field string, t ai.Target) error {
	if t.Provider == "" {
		return apperr.Invalidf("%sprovider is required", field)
	}
	if !ai.KnownProvider(t.Provider) {
		return apperr.Invalidf("%sprovider %q is not supported (openai, anthropic, mock)", field, t.Provider)
	}
	if t.Model == "" {
		return apperr.Invalidf("%smodel is required", field)
	}
	if len(t.Model) > 256 {
		return apperr.Invalidf("%smodel is longer than 256 characters", field)
	}
	return nil
}

func (s *Store) workflowsKey(pid string) string { return s.projKey(pid, "workflows") }

// CreateWorkflow adds a workflow; a name in use is a conflict.
func (s *Store) CreateWorkflow(ctx context.Context, pid string, in WorkflowInput) (Workflow, error) {
	if err := s.validateWorkflow(ctx, pid, &in); err != nil {
		return Workflow{}, err
	}
	now := s.now().UTC()
	w := workflowFrom(in, randomID("wf_"), now, now)
	ok, err := s.rdb.HSetNX(ctx, s.workflowsKey(pid), w.Name, wire.MustJSON(w)).Result()
	if err != nil {
		return Workflow{}, fmt.Errorf("create workflow: %w", err)
	}
	if !ok {
		return Workflow{}, apperr.New(apperr.Conflict, "workflow_exists", "a workflow named %q already exists", w.Name)
	}
	return w, nil
}

func workflowFrom(in WorkflowInput, id string, created, updated time.Time) Workflow {
	return Workflow{
		ID: id, Name: in.Name, EventName: in.EventName, Provider: in.Provider, Model: in.Model,
		StructuredOutputID: in.StructuredOutputID, Fallbacks: in.Fallbacks, SystemPrompt: in.SystemPrompt,
		CallbackTimeoutSeconds: in.CallbackTimeoutSeconds, Mock: in.Mock, Stream: in.Stream, CreatedAt: created, UpdatedAt: updated,
	}
}

// GetWorkflow returns one workflow by name.
func (s *Store) GetWorkflow(ctx context.Context, pid, name string) (Workflow, error) {
	return cachedJSON(ctx, s, s.workflows, pid, s.workflowsKey(pid), name, "workflow")
}

// ReplaceWorkflow overwrites the workflow named name (PUT); the name in the
// body, if any, must match.
func (s *Store) ReplaceWorkflow(ctx context.Context, pid, name string, in WorkflowInput) (Workflow, error) {
	if in.Name == "" {
		in.Name = name
	}
	if in.Name != name {
		return Workflow{}, apperr.Invalidf("name in the body (%q) differs from the name in the path (%q); workflows cannot be renamed", in.Name, name)
	}
	old, err := s.GetWorkflow(ctx, pid, name)
	if err != nil {
		return Workflow{}, err
	}
	if err := s.validateWorkflow(ctx, pid, &in); err != nil {
		return Workflow{}, err
	}
	w := workflowFrom(in, old.ID, old.CreatedAt, s.now().UTC())
	// HSET XX semantics: a concurrent delete wins rather than resurrecting.
	n, err := replaceScript.Run(ctx, s.rdb, []string{s.workflowsKey(pid)}, name, wire.MustJSON(w)).Int()
	if err != nil {
		return Workflow{}, fmt.Errorf("replace workflow: %w", err)
	}
	s.workflows.drop(fieldKey(pid, name))
	if n == 0 {
		return Workflow{}, apperr.NotFoundf("workflow %q not found", name)
	}
	return w, nil
}

// DeleteWorkflow removes a workflow. Channels already submitted keep their
// snapshot and finish normally.
func (s *Store) DeleteWorkflow(ctx context.Context, pid, name string) error {
	n, err := s.rdb.HDel(ctx, s.workflowsKey(pid), name).Result()
	s.workflows.drop(fieldKey(pid, name))
	if err != nil {
		return fmt.Errorf("delete workflow: %w", err)
	}
	if n == 0 {
		return apperr.NotFoundf("workflow %q not found", name)
	}
	return nil
}

// ListWorkflows lists workflows by name.
func (s *Store) ListWorkflows(ctx context.Context, pid string, p ListParams) (Page[Workflow], error) {
	return listHash(ctx, s, s.workflowsKey(pid), p, func(w *Workflow) string { return w.Name })
}
