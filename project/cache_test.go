package project_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/project"
)

// TestCacheAcrossNodes: a change made on one node is seen at once there and
// on every other node within CacheTTL, never later.
func TestCacheAcrossNodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	nodeA := e.store
	nodeB := project.New(e.rdb, project.Options{Prefix: e.prefix, Now: e.clock.Now})
	p, _, err := nodeA.CreateProject(ctx, "acme")
	mustOK(t, err, "CreateProject")
	pid := p.ID

	k, key, err := nodeA.CreateKey(ctx, pid, "ci")
	mustOK(t, err, "CreateKey")
	_, err = nodeA.CreateWorkflow(ctx, pid, project.WorkflowInput{Name: "wf", Provider: "mock"})
	mustOK(t, err, "CreateWorkflow")
	o, err := nodeA.CreateOutput(ctx, pid, "o", json.RawMessage(`{"type":"object"}`))
	mustOK(t, err, "CreateOutput")

	// Node B reads everything once, filling its cache.
	_, err = nodeB.Authenticate(ctx, key)
	mustOK(t, err, "B Authenticate")
	_, err = nodeB.GetWorkflow(ctx, pid, "wf")
	mustOK(t, err, "B GetWorkflow")
	_, err = nodeB.GetOutput(ctx, pid, o.ID)
	mustOK(t, err, "B GetOutput")

	// Node A changes all three.
	mustOK(t, nodeA.DeleteKey(ctx, pid, k.ID), "A DeleteKey")
	_, err = nodeA.ReplaceWorkflow(ctx, pid, "wf", project.WorkflowInput{Provider: "openai", Model: "gpt-4o"})
	mustOK(t, err, "A ReplaceWorkflow")
	mustOK(t, nodeA.DeleteOutput(ctx, pid, o.ID), "A DeleteOutput")

	// Node A sees its own changes at once.
	wantUnauthorized(t, nodeA, key)
	if w, err := nodeA.GetWorkflow(ctx, pid, "wf"); err != nil || w.Provider != "openai" {
		t.Errorf("A GetWorkflow after its own replace = %+v, %v", w, err)
	}
	_, err = nodeA.GetOutput(ctx, pid, o.ID)
	wantAppErr(t, err, apperr.NotFound, "not_found")

	// Node B, once CacheTTL has passed, sees them too.
	e.clock.Advance(project.CacheTTL + time.Millisecond)
	wantUnauthorized(t, nodeB, key)
	if w, err := nodeB.GetWorkflow(ctx, pid, "wf"); err != nil || w.Provider != "openai" {
		t.Errorf("B GetWorkflow after CacheTTL = %+v, %v; want the replaced workflow", w, err)
	}
	_, err = nodeB.GetOutput(ctx, pid, o.ID)
	wantAppErr(t, err, apperr.NotFound, "not_found")
}

// TestCacheDisabled: a negative CacheTTL makes every read go to Redis, so
// another node's change is visible at once.
func TestCacheDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{CacheTTL: -1})
	ctx := context.Background()
	nodeB := project.New(e.rdb, project.Options{Prefix: e.prefix, Now: e.clock.Now, CacheTTL: -1})
	p, _, err := e.store.CreateProject(ctx, "acme")
	mustOK(t, err, "CreateProject")
	k, key, err := e.store.CreateKey(ctx, p.ID, "ci")
	mustOK(t, err, "CreateKey")
	_, err = nodeB.Authenticate(ctx, key)
	mustOK(t, err, "B Authenticate")
	mustOK(t, e.store.DeleteKey(ctx, p.ID, k.ID), "DeleteKey")
	wantUnauthorized(t, nodeB, key)
}
