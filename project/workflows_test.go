package project_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/project"
)

func TestWorkflowLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")

	in := project.WorkflowInput{
		Name: "summarize", EventName: "order.created", Provider: "openai", Model: "gpt-4o-mini",
		Fallbacks:    []ai.Target{{Provider: "anthropic", Model: "claude-3-5-haiku"}},
		SystemPrompt: "be brief", CallbackTimeoutSeconds: 120,
	}
	created, err := e.store.CreateWorkflow(ctx, pid, in)
	mustOK(t, err, "CreateWorkflow")
	if created.ID == "" || created.CreatedAt.IsZero() {
		t.Fatalf("created workflow has no id or created_at: %+v", created)
	}

	got, err := e.store.GetWorkflow(ctx, pid, "summarize")
	mustOK(t, err, "GetWorkflow")
	if !reflect.DeepEqual(got, created) {
		t.Errorf("GetWorkflow = %+v, want what CreateWorkflow returned %+v", got, created)
	}
	if got.EventName != "order.created" || got.CallbackTimeoutSeconds != 120 || got.SystemPrompt != "be brief" ||
		len(got.Fallbacks) != 1 || got.Fallbacks[0].Provider != "anthropic" {
		t.Errorf("stored workflow lost fields: %+v", got)
	}

	_, err = e.store.CreateWorkflow(ctx, pid, project.WorkflowInput{Name: "summarize", Provider: "mock"})
	wantAppErr(t, err, apperr.Conflict, "workflow_exists", "summarize")
	if again, _ := e.store.GetWorkflow(ctx, pid, "summarize"); again.Provider != "openai" {
		t.Errorf("a rejected duplicate overwrote the workflow: provider = %q", again.Provider)
	}

	e.clock.Advance(1000)
	repl, err := e.store.ReplaceWorkflow(ctx, pid, "summarize", project.WorkflowInput{Provider: "anthropic", Model: "claude-sonnet-4"})
	mustOK(t, err, "ReplaceWorkflow")
	got, err = e.store.GetWorkflow(ctx, pid, "summarize")
	mustOK(t, err, "GetWorkflow after replace")
	switch {
	case got.ID != created.ID:
		t.Errorf("replace changed the id: %q → %q", created.ID, got.ID)
	case !got.CreatedAt.Equal(created.CreatedAt):
		t.Errorf("replace changed created_at: %v → %v", created.CreatedAt, got.CreatedAt)
	case !got.UpdatedAt.After(created.UpdatedAt):
		t.Errorf("replace did not move updated_at: %v → %v", created.UpdatedAt, got.UpdatedAt)
	case got.Provider != "anthropic" || got.Model != "claude-sonnet-4":
		t.Errorf("replace did not store the new target: %+v", got)
	case got.EventName != "" || got.CallbackTimeoutSeconds != 0 || len(got.Fallbacks) != 0:
		t.Errorf("PUT is a replacement, but old fields survived: %+v", got)
	case !reflect.DeepEqual(got, repl):
		t.Errorf("ReplaceWorkflow returned %+v, stored %+v", repl, got)
	}

	_, err = e.store.ReplaceWorkflow(ctx, pid, "summarize", project.WorkflowInput{Name: "other", Provider: "mock"})
	wantAppErr(t, err, apperr.Invalid, "invalid_request", "other", "summarize")

	mustOK(t, e.store.DeleteWorkflow(ctx, pid, "summarize"), "DeleteWorkflow")
	_, err = e.store.GetWorkflow(ctx, pid, "summarize")
	wantAppErr(t, err, apperr.NotFound, "not_found", "summarize")
	wantAppErr(t, e.store.DeleteWorkflow(ctx, pid, "summarize"), apperr.NotFound, "not_found")

	// The name is free again after a delete.
	_, err = e.store.CreateWorkflow(ctx, pid, project.WorkflowInput{Name: "summarize", Provider: "mock"})
	mustOK(t, err, "CreateWorkflow after delete")
}

func TestWorkflowUnknown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")
	tests := []struct {
		name string
		call func() error
	}{
		{"get", func() error { _, err := e.store.GetWorkflow(ctx, pid, "nope"); return err }},
		{"replace", func() error {
			_, err := e.store.ReplaceWorkflow(ctx, pid, "nope", project.WorkflowInput{Provider: "mock"})
			return err
		}},
		{"delete", func() error { return e.store.DeleteWorkflow(ctx, pid, "nope") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantAppErr(t, tt.call(), apperr.NotFound, "not_found", "nope")
		})
	}
	// A replace of a missing workflow must not create it.
	if _, err := e.store.GetWorkflow(ctx, pid, "nope"); err == nil {
		t.Error("ReplaceWorkflow of a missing workflow created it")
	}
}

func TestWorkflowValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")
	other := e.project(t, "other")
	foreign, err := e.store.CreateOutput(ctx, other, "theirs", json.RawMessage(`{"type":"object"}`))
	mustOK(t, err, "CreateOutput in other project")

	ok := func(mod func(*project.WorkflowInput)) project.WorkflowInput {
		in := project.WorkflowInput{Name: "wf", Provider: "openai", Model: "gpt-4o"}
		mod(&in)
		return in
	}
	tests := []struct {
		name    string
		in      project.WorkflowInput
		mention string // the message must name the offending field
	}{
		{"missing name", ok(func(in *project.WorkflowInput) { in.Name = "" }), "name"},
		{"name with space", ok(func(in *project.WorkflowInput) { in.Name = "my flow" }), "name"},
		{"name starting with dash", ok(func(in *project.WorkflowInput) { in.Name = "-flow" }), "name"},
		{"name with slash", ok(func(in *project.WorkflowInput) { in.Name = "a/b" }), "name"},
		{"name too long", ok(func(in *project.WorkflowInput) { in.Name = strings.Repeat("a", 129) }), "name"},
		{"missing provider", ok(func(in *project.WorkflowInput) { in.Provider = "" }), "provider"},
		{"unknown provider", ok(func(in *project.WorkflowInput) { in.Provider = "gemini" }), "gemini"},
		{"missing model", ok(func(in *project.WorkflowInput) { in.Model = "" }), "model"},
		{"model too long", ok(func(in *project.WorkflowInput) { in.Model = strings.Repeat("m", 257) }), "model"},
		{"event_name with space", ok(func(in *project.WorkflowInput) { in.EventName = "order created" }), "event_name"},
		{"event_name with bang", ok(func(in *project.WorkflowInput) { in.EventName = "order!" }), "event_name"},
		{"event_name too long", ok(func(in *project.WorkflowInput) { in.EventName = strings.Repeat("e", 129) }), "event_name"},
		{"negative callback timeout", ok(func(in *project.WorkflowInput) { in.CallbackTimeoutSeconds = -1 }), "callback_timeout_seconds"},
		{"callback timeout over a day", ok(func(in *project.WorkflowInput) { in.CallbackTimeoutSeconds = 86401 }), "callback_timeout_seconds"},
		{"bad fallback provider", ok(func(in *project.WorkflowInput) {
			in.Fallbacks = []ai.Target{{Provider: "mock"}, {Provider: "nope", Model: "x"}}
		}), "fallbacks[1].provider"},
		{"fallback without model", ok(func(in *project.WorkflowInput) {
			in.Fallbacks = []ai.Target{{Provider: "openai"}}
		}), "fallbacks[0].model"},
		{"too many fallbacks", ok(func(in *project.WorkflowInput) {
			in.Fallbacks = make([]ai.Target, 9)
			for i := range in.Fallbacks {
				in.Fallbacks[i] = ai.Target{Provider: "mock", Model: "mock"}
			}
		}), "fallbacks"},
		{"mock response not JSON", ok(func(in *project.WorkflowInput) {
			in.Mock = &ai.Mock{Response: json.RawMessage(`{nope`)}
		}), "mock.response"},
		{"mock negative delay", ok(func(in *project.WorkflowInput) { in.Mock = &ai.Mock{DelayMS: -5} }), "mock.delay_ms"},
		{"unknown structured output", ok(func(in *project.WorkflowInput) { in.StructuredOutputID = "so_missing" }), "so_missing"},
		{"structured output of another project", ok(func(in *project.WorkflowInput) { in.StructuredOutputID = foreign.ID }), foreign.ID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.store.CreateWorkflow(ctx, pid, tt.in)
			wantAppErr(t, err, apperr.Invalid, "invalid_request", tt.mention)

			// PUT validates the same way, and leaves the stored one alone.
			name := "existing-" + strings.ReplaceAll(tt.name, " ", "-")
			if tt.in.Name != "wf" {
				return // the name itself is the problem; PUT takes it from the path
			}
			_, err = e.store.CreateWorkflow(ctx, pid, project.WorkflowInput{Name: name, Provider: "mock"})
			mustOK(t, err, "create existing")
			in := tt.in
			in.Name = ""
			_, err = e.store.ReplaceWorkflow(ctx, pid, name, in)
			wantAppErr(t, err, apperr.Invalid, "invalid_request", tt.mention)
			if w, _ := e.store.GetWorkflow(ctx, pid, name); w.Provider != "mock" {
				t.Errorf("a rejected replace changed the workflow: %+v", w)
			}
		})
	}
	page, err := e.store.ListWorkflows(ctx, pid, project.ListParams{})
	mustOK(t, err, "ListWorkflows")
	for _, w := range page.Items {
		if w.Name == "wf" {
			t.Errorf("an invalid workflow was stored: %+v", w)
		}
	}
}

func TestWorkflowAccepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")
	out, err := e.store.CreateOutput(ctx, pid, "mine", json.RawMessage(`{"type":"object"}`))
	mustOK(t, err, "CreateOutput")

	tests := []struct {
		name string
		in   project.WorkflowInput
		want func(project.Workflow) bool
	}{
		{"mock model defaults to mock",
			project.WorkflowInput{Name: "m1", Provider: "mock"},
			func(w project.Workflow) bool { return w.Model == "mock" }},
		{"mock fallback model defaults to mock",
			project.WorkflowInput{Name: "m2", Provider: "openai", Model: "gpt-4o", Fallbacks: []ai.Target{{Provider: "mock"}}},
			func(w project.Workflow) bool { return len(w.Fallbacks) == 1 && w.Fallbacks[0].Model == "mock" }},
		{"no fallbacks is an empty list, not null",
			project.WorkflowInput{Name: "m3", Provider: "mock"},
			func(w project.Workflow) bool { return w.Fallbacks != nil && len(w.Fallbacks) == 0 }},
		{"callback timeout of a day",
			project.WorkflowInput{Name: "m4", Provider: "mock", CallbackTimeoutSeconds: 86400, EventName: "a.b:c-d_e"},
			func(w project.Workflow) bool { return w.CallbackTimeoutSeconds == 86400 && w.EventName == "a.b:c-d_e" }},
		{"own structured output",
			project.WorkflowInput{Name: "m5", Provider: "mock", StructuredOutputID: out.ID},
			func(w project.Workflow) bool { return w.StructuredOutputID == out.ID }},
		{"mock settings kept",
			project.WorkflowInput{Name: "m6", Provider: "mock", Mock: &ai.Mock{Response: json.RawMessage(`{"a":1}`), DelayMS: 10, Error: "boom"}},
			func(w project.Workflow) bool {
				return w.Mock != nil && string(w.Mock.Response) == `{"a":1}` && w.Mock.DelayMS == 10 && w.Mock.Error == "boom"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.store.CreateWorkflow(ctx, pid, tt.in)
			mustOK(t, err, "CreateWorkflow")
			got, err := e.store.GetWorkflow(ctx, pid, tt.in.Name)
			mustOK(t, err, "GetWorkflow")
			if !tt.want(got) {
				t.Errorf("stored workflow = %+v", got)
			}
		})
	}
}
