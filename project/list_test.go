package project_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/project"
)

// collection adapts one console list to ids, so one test pages them all.
type collection struct {
	name   string
	create func(tb testing.TB, e *env, pid string, i int) string
	list   func(e *env, pid string, p project.ListParams) ([]string, *string, error)
}

func ids[T any](page project.Page[T], err error, id func(T) string) ([]string, *string, error) {
	out := make([]string, len(page.Items))
	for i, it := range page.Items {
		out[i] = id(it)
	}
	return out, page.NextCursor, err
}

var collections = []collection{
	{
		name: "workflows",
		create: func(tb testing.TB, e *env, pid string, i int) string {
			// Created out of name order: the list sorts by name.
			name := fmt.Sprintf("wf-%02d", (i*5)%7)
			_, err := e.store.CreateWorkflow(context.Background(), pid, project.WorkflowInput{Name: name, Provider: "mock"})
			mustOK(tb, err, "CreateWorkflow")
			return name
		},
		list: func(e *env, pid string, p project.ListParams) ([]string, *string, error) {
			page, err := e.store.ListWorkflows(context.Background(), pid, p)
			return ids(page, err, func(w project.Workflow) string { return w.Name })
		},
	},
	{
		name: "webhooks",
		create: func(tb testing.TB, e *env, pid string, i int) string {
			w, err := e.store.CreateWebhook(context.Background(), pid, project.WebhookInput{URL: fmt.Sprintf("https://example.com/%d", i)})
			mustOK(tb, err, "CreateWebhook")
			return w.ID
		},
		list: func(e *env, pid string, p project.ListParams) ([]string, *string, error) {
			page, err := e.store.ListWebhooks(context.Background(), pid, p)
			return ids(page, err, func(w project.Webhook) string { return w.ID })
		},
	},
	{
		name: "structured outputs",
		create: func(tb testing.TB, e *env, pid string, i int) string {
			o, err := e.store.CreateOutput(context.Background(), pid, fmt.Sprintf("o%d", i), json.RawMessage(`{"type":"object"}`))
			mustOK(tb, err, "CreateOutput")
			return o.ID
		},
		list: func(e *env, pid string, p project.ListParams) ([]string, *string, error) {
			page, err := e.store.ListOutputs(context.Background(), pid, p)
			return ids(page, err, func(o project.StructuredOutput) string { return o.ID })
		},
	},
	{
		name: "keys",
		create: func(tb testing.TB, e *env, pid string, i int) string {
			k, _, err := e.store.CreateKey(context.Background(), pid, fmt.Sprintf("k%d", i))
			mustOK(tb, err, "CreateKey")
			return k.ID
		},
		list: func(e *env, pid string, p project.ListParams) ([]string, *string, error) {
			page, err := e.store.ListKeys(context.Background(), pid, p)
			return ids(page, err, func(k project.APIKey) string { return k.ID })
		},
	},
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	for _, c := range collections {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, project.Options{})
			// A bare project id (no CreateProject) keeps the project's
			// first key out of the keys list.
			pid := "p-" + c.name
			var want []string
			for i := range 7 {
				want = append(want, c.create(t, e, pid, i))
			}
			if c.name == "workflows" {
				slices.Sort(want)
			}

			var got []string
			var sizes []int
			cursor := ""
			for range 10 {
				items, next, err := c.list(e, pid, project.ListParams{Limit: 3, Cursor: cursor})
				mustOK(t, err, "list")
				got = append(got, items...)
				sizes = append(sizes, len(items))
				if next == nil {
					break
				}
				if *next == "" {
					t.Fatal("next_cursor is an empty string; want null at the end or a cursor")
				}
				cursor = *next
			}
			if !slices.Equal(sizes, []int{3, 3, 1}) {
				t.Errorf("page sizes = %v, want [3 3 1]", sizes)
			}
			if !slices.Equal(got, want) {
				t.Errorf("paged items = %q,\nwant in order   %q", got, want)
			}

			// One page that holds everything has no next cursor.
			items, next, err := c.list(e, pid, project.ListParams{Limit: 7})
			mustOK(t, err, "list all")
			if len(items) != 7 || next != nil {
				t.Errorf("limit 7 gave %d items and cursor %v; want 7 and none", len(items), next)
			}
			// A limit above the maximum is clamped, not refused.
			items, next, err = c.list(e, pid, project.ListParams{Limit: 100000})
			mustOK(t, err, "list huge limit")
			if len(items) != 7 || next != nil {
				t.Errorf("limit 100000 gave %d items and cursor %v", len(items), next)
			}
		})
	}
}

// TestListCursorSurvivesDelete: deleting the item a cursor points at must
// neither repeat nor skip the rest.
func TestListCursorSurvivesDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := "p1"
	var want []string
	for i := range 5 {
		w, err := e.store.CreateWebhook(ctx, pid, project.WebhookInput{URL: fmt.Sprintf("https://example.com/%d", i)})
		mustOK(t, err, "CreateWebhook")
		want = append(want, w.ID)
	}
	page, err := e.store.ListWebhooks(ctx, pid, project.ListParams{Limit: 2})
	mustOK(t, err, "page 1")
	if page.NextCursor == nil {
		t.Fatal("no cursor after page 1")
	}
	mustOK(t, e.store.DeleteWebhook(ctx, pid, page.Items[1].ID), "delete the cursor's item")
	page2, err := e.store.ListWebhooks(ctx, pid, project.ListParams{Limit: 2, Cursor: *page.NextCursor})
	mustOK(t, err, "page 2")
	var got []string
	for _, w := range page2.Items {
		got = append(got, w.ID)
	}
	if !slices.Equal(got, want[2:4]) {
		t.Errorf("page 2 after deleting the cursor's item = %q, want %q", got, want[2:4])
	}
}

func TestListParams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	pid := e.project(t, "acme")
	tests := []struct {
		name      string
		p         project.ListParams
		wantLimit int // 0 = Invalid
	}{
		{"default", project.ListParams{}, 50},
		{"one", project.ListParams{Limit: 1}, 1},
		{"max", project.ListParams{Limit: 500}, 500},
		{"above max clamps", project.ListParams{Limit: 501}, 500},
		{"far above max clamps", project.ListParams{Limit: 1 << 30}, 500},
		{"negative", project.ListParams{Limit: -1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.p.Normalize()
			if tt.wantLimit == 0 {
				wantAppErr(t, err, apperr.Invalid, "invalid_request", "limit")
				return
			}
			mustOK(t, err, "Normalize")
			if got.Limit != tt.wantLimit {
				t.Errorf("limit = %d, want %d", got.Limit, tt.wantLimit)
			}
		})
	}

	for _, cursor := range []string{"!!!", "not base64 at all", "a+b/c==", "%zz"} {
		t.Run("malformed cursor "+cursor, func(t *testing.T) {
			_, err := e.store.ListWorkflows(context.Background(), pid, project.ListParams{Cursor: cursor})
			wantAppErr(t, err, apperr.Invalid, "invalid_request", "cursor")
		})
	}
}
