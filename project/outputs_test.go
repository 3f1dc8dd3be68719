package project_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/project"
)

func TestCreateOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")

	tests := []struct {
		name     string
		outName  string
		schema   string
		want     string // the stored (compacted) schema; "" = rejected
		wantCode string
	}{
		{"object schema is compacted", "person",
			"{\n  \"type\": \"object\",\n  \"properties\": { \"name\": { \"type\": \"string\" } },\n  \"required\": [ \"name\" ]\n}\n",
			`{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}`, ""},
		{"boolean schema", "anything", ` true `, `true`, ""},
		{"type is a number", "bad-type", `{"type":12}`, "", "invalid_schema"},
		{"unknown type name", "bad-name", `{"type":"objekt"}`, "", "invalid_schema"},
		{"minLength negative", "bad-min", `{"type":"string","minLength":-1}`, "", "invalid_schema"},
		{"not JSON", "garbage", `{"type":`, "", "invalid_schema"},
		{"schema missing", "empty", ``, "", "invalid_request"},
		{"schema null", "null", `null`, "", "invalid_request"},
		{"name missing", "", `{"type":"object"}`, "", "invalid_request"},
		{"name too long", strings.Repeat("n", 129), `{"type":"object"}`, "", "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := e.store.CreateOutput(ctx, pid, tt.outName, json.RawMessage(tt.schema))
			if tt.want == "" {
				wantAppErr(t, err, apperr.Invalid, tt.wantCode)
				return
			}
			mustOK(t, err, "CreateOutput")
			if !strings.HasPrefix(o.ID, "so_") || o.Name != tt.outName {
				t.Errorf("CreateOutput = %+v", o)
			}
			got, err := e.store.GetOutput(ctx, pid, o.ID)
			mustOK(t, err, "GetOutput")
			if string(got.Schema) != tt.want {
				t.Errorf("stored schema = %s, want %s", got.Schema, tt.want)
			}
			if got.Name != tt.outName {
				t.Errorf("stored name = %q, want %q", got.Name, tt.outName)
			}
		})
	}
	page, err := e.store.ListOutputs(ctx, pid, project.ListParams{})
	mustOK(t, err, "ListOutputs")
	if len(page.Items) != 2 {
		t.Errorf("ListOutputs has %d items, want the 2 valid ones: %+v", len(page.Items), page.Items)
	}
}

func TestOutputTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	pid := e.project(t, "acme")
	big := `{"type":"object","description":"` + strings.Repeat("x", 256<<10) + `"}`
	_, err := e.store.CreateOutput(context.Background(), pid, "big", json.RawMessage(big))
	wantAppErr(t, err, apperr.Invalid, "invalid_request", "KiB")
}

func TestDeleteOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")
	o, err := e.store.CreateOutput(ctx, pid, "person", json.RawMessage(`{"type":"object"}`))
	mustOK(t, err, "CreateOutput")
	_, err = e.store.CreateWorkflow(ctx, pid, project.WorkflowInput{Name: "extract", Provider: "mock", StructuredOutputID: o.ID})
	mustOK(t, err, "CreateWorkflow")

	wantAppErr(t, e.store.DeleteOutput(ctx, pid, o.ID), apperr.Conflict, "output_in_use", "extract")
	if _, err := e.store.GetOutput(ctx, pid, o.ID); err != nil {
		t.Fatalf("the output in use was deleted anyway: %v", err)
	}

	// Once no workflow points at it, it can go.
	_, err = e.store.ReplaceWorkflow(ctx, pid, "extract", project.WorkflowInput{Provider: "mock"})
	mustOK(t, err, "ReplaceWorkflow")
	mustOK(t, e.store.DeleteOutput(ctx, pid, o.ID), "DeleteOutput")
	_, err = e.store.GetOutput(ctx, pid, o.ID)
	wantAppErr(t, err, apperr.NotFound, "not_found", o.ID)
	wantAppErr(t, e.store.DeleteOutput(ctx, pid, o.ID), apperr.NotFound, "not_found")
}
