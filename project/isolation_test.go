package project_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/project"
)

// TestProjectIsolation checks that project B cannot see or change project
// A's objects: every attempt answers not_found, as if the id did not exist.
func TestProjectIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	a := e.project(t, "alpha")
	b := e.project(t, "beta")

	out, err := e.store.CreateOutput(ctx, a, "person", json.RawMessage(`{"type":"object"}`))
	mustOK(t, err, "CreateOutput")
	wf, err := e.store.CreateWorkflow(ctx, a, project.WorkflowInput{Name: "summarize", Provider: "mock", StructuredOutputID: out.ID})
	mustOK(t, err, "CreateWorkflow")
	wh, err := e.store.CreateWebhook(ctx, a, project.WebhookInput{URL: "https://example.com/a"})
	mustOK(t, err, "CreateWebhook")
	key, rawKey, err := e.store.CreateKey(ctx, a, "ci")
	mustOK(t, err, "CreateKey")
	desc := "hijacked"

	tests := []struct {
		name string
		call func() error
	}{
		{"get workflow", func() error { _, err := e.store.GetWorkflow(ctx, b, wf.Name); return err }},
		{"replace workflow", func() error {
			_, err := e.store.ReplaceWorkflow(ctx, b, wf.Name, project.WorkflowInput{Provider: "openai", Model: "x"})
			return err
		}},
		{"delete workflow", func() error { return e.store.DeleteWorkflow(ctx, b, wf.Name) }},
		{"get webhook", func() error { _, err := e.store.GetWebhook(ctx, b, wh.ID); return err }},
		{"patch webhook", func() error {
			_, err := e.store.UpdateWebhook(ctx, b, wh.ID, project.WebhookPatch{Description: &desc})
			return err
		}},
		{"rotate webhook secret", func() error { _, err := e.store.RotateSecret(ctx, b, wh.ID); return err }},
		{"delete webhook", func() error { return e.store.DeleteWebhook(ctx, b, wh.ID) }},
		{"get output", func() error { _, err := e.store.GetOutput(ctx, b, out.ID); return err }},
		{"delete output", func() error { return e.store.DeleteOutput(ctx, b, out.ID) }},
		{"delete key", func() error { return e.store.DeleteKey(ctx, b, key.ID) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantAppErr(t, tt.call(), apperr.NotFound, "not_found")
		})
	}

	// Nothing of A changed.
	gotWF, err := e.store.GetWorkflow(ctx, a, wf.Name)
	mustOK(t, err, "A's workflow")
	if gotWF.Provider != "mock" || gotWF.StructuredOutputID != out.ID {
		t.Errorf("B changed A's workflow: %+v", gotWF)
	}
	gotWH, err := e.store.GetWebhook(ctx, a, wh.ID)
	mustOK(t, err, "A's webhook")
	if gotWH.Secret != wh.Secret || gotWH.Description != "" || gotWH.PreviousSecret != "" {
		t.Errorf("B changed A's webhook: %+v", gotWH)
	}
	_, err = e.store.GetOutput(ctx, a, out.ID)
	mustOK(t, err, "A's output")
	p, err := e.store.Authenticate(ctx, rawKey)
	mustOK(t, err, "A's key")
	if p.ProjectID != a {
		t.Errorf("A's key authenticates to %s", p.ProjectID)
	}

	// B's lists are empty of A's things.
	wfs, err := e.store.ListWorkflows(ctx, b, project.ListParams{})
	mustOK(t, err, "ListWorkflows B")
	whs, err := e.store.ListWebhooks(ctx, b, project.ListParams{})
	mustOK(t, err, "ListWebhooks B")
	outs, err := e.store.ListOutputs(ctx, b, project.ListParams{})
	mustOK(t, err, "ListOutputs B")
	keys, err := e.store.ListKeys(ctx, b, project.ListParams{})
	mustOK(t, err, "ListKeys B")
	if len(wfs.Items)+len(whs.Items)+len(outs.Items) != 0 || len(keys.Items) != 1 {
		t.Errorf("B sees %d workflows, %d webhooks, %d outputs, %d keys; want 0, 0, 0 and its own first key",
			len(wfs.Items), len(whs.Items), len(outs.Items), len(keys.Items))
	}

	// The same workflow name may exist in both projects.
	_, err = e.store.CreateWorkflow(ctx, b, project.WorkflowInput{Name: wf.Name, Provider: "mock"})
	mustOK(t, err, "B creates a workflow with A's name")
}
