package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/project"
)

// answer writes v with status, or the error.
func (s *Server) answer(c *gin.Context, status int, v any, err error) {
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(status, v)
}

func list[T any](s *Server, c *gin.Context, f func(project.ListParams) (project.Page[T], error)) {
	p, err := listParams(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	page, err := f(p)
	s.answer(c, http.StatusOK, page, err)
}

func (s *Server) createWorkflow(c *gin.Context) {
	var in project.WorkflowInput
	if !s.body(c, &in) {
		return
	}
	w, err := s.Console.CreateWorkflow(c.Request.Context(), principal(c).ProjectID, in)
	s.answer(c, http.StatusCreated, w, err)
}

func (s *Server) listWorkflows(c *gin.Context) {
	list(s, c, func(p project.ListParams) (project.Page[project.Workflow], error) {
		return s.Console.ListWorkflows(c.Request.Context(), principal(c).ProjectID, p)
	})
}

func (s *Server) getWorkflow(c *gin.Context) {
	w, err := s.Console.GetWorkflow(c.Request.Context(), principal(c).ProjectID, c.Param("name"))
	s.answer(c, http.StatusOK, w, err)
}

func (s *Server) replaceWorkflow(c *gin.Context) {
	var in project.WorkflowInput
	if !s.body(c, &in) {
		return
	}
	w, err := s.Console.ReplaceWorkflow(c.Request.Context(), principal(c).ProjectID, c.Param("name"), in)
	s.answer(c, http.StatusOK, w, err)
}

func (s *Server) deleteWorkflow(c *gin.Context) {
	err := s.Console.DeleteWorkflow(c.Request.Context(), principal(c).ProjectID, c.Param("name"))
	s.answer(c, http.StatusOK, gin.H{"deleted": true}, err)
}

func (s *Server) createOutput(c *gin.Context) {
	var in struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
	}
	if !s.body(c, &in) {
		return
	}
	o, err := s.Console.CreateOutput(c.Request.Context(), principal(c).ProjectID, in.Name, in.Schema)
	s.answer(c, http.StatusCreated, o, err)
}

func (s *Server) listOutputs(c *gin.Context) {
	list(s, c, func(p project.ListParams) (project.Page[project.StructuredOutput], error) {
		return s.Console.ListOutputs(c.Request.Context(), principal(c).ProjectID, p)
	})
}

func (s *Server) getOutput(c *gin.Context) {
	o, err := s.Console.GetOutput(c.Request.Context(), principal(c).ProjectID, c.Param("id"))
	s.answer(c, http.StatusOK, o, err)
}

func (s *Server) deleteOutput(c *gin.Context) {
	err := s.Console.DeleteOutput(c.Request.Context(), principal(c).ProjectID, c.Param("id"))
	s.answer(c, http.StatusOK, gin.H{"deleted": true}, err)
}

func (s *Server) createWebhook(c *gin.Context) {
	var in project.WebhookInput
	if !s.body(c, &in) {
		return
	}
	w, err := s.Console.CreateWebhook(c.Request.Context(), principal(c).ProjectID, in)
	s.answer(c, http.StatusCreated, w, err)
}

// webhookView is an endpoint with its delivery health.
type webhookView struct {
	project.Webhook
	Health dispatch.Health `json:"health"`
}

// withHealth adds each endpoint's health; a disabled endpoint's state is
// "disabled", with why.
func (s *Server) withHealth(ctx context.Context, ws []project.Webhook) ([]webhookView, error) {
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.ID
	}
	hs, err := s.Deliveries.Health(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]webhookView, len(ws))
	for i, w := range ws {
		h := hs[w.ID]
		if !w.Enabled {
			h.State, h.OpenUntil = "disabled", nil
			h.Reason = w.DisabledReason
			if h.Reason == "" {
				h.Reason = "disabled by the project"
			}
		}
		out[i] = webhookView{Webhook: w, Health: h}
	}
	return out, nil
}

func (s *Server) listWebhooks(c *gin.Context) {
	list(s, c, func(p project.ListParams) (project.Page[webhookView], error) {
		ctx := c.Request.Context()
		page, err := s.Console.ListWebhooks(ctx, principal(c).ProjectID, p)
		if err != nil {
			return project.Page[webhookView]{}, err
		}
		items, err := s.withHealth(ctx, page.Items)
		return project.Page[webhookView]{Items: items, NextCursor: page.NextCursor}, err
	})
}

func (s *Server) getWebhook(c *gin.Context) {
	ctx := c.Request.Context()
	w, err := s.Console.GetWebhook(ctx, principal(c).ProjectID, c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	v, err := s.withHealth(ctx, []project.Webhook{w})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.answer(c, http.StatusOK, v[0], nil)
}

func (s *Server) updateWebhook(c *gin.Context) {
	var in project.WebhookPatch
	if !s.body(c, &in) {
		return
	}
	// Turned back on, a disabled endpoint starts afresh (its failures from
	// before do not disable it again at once); an enabled one keeps its
	// failure clock. The fresh start is written once the patch is checked
	// and before the endpoint is enabled: if it fails, the endpoint stays
	// disabled and the client's retry starts it afresh (the other way
	// round, a retry after a failed fresh start would find the endpoint
	// enabled and skip it).
	var turnOn func(context.Context) error
	if s.Deliveries != nil {
		id := c.Param("id")
		turnOn = func(ctx context.Context) error { return s.Deliveries.Restart(ctx, id) }
	}
	w, err := s.Console.UpdateWebhookWith(c.Request.Context(), principal(c).ProjectID, c.Param("id"), in, turnOn)
	s.answer(c, http.StatusOK, w, err)
}

func (s *Server) deleteWebhook(c *gin.Context) {
	err := s.Console.DeleteWebhook(c.Request.Context(), principal(c).ProjectID, c.Param("id"))
	s.answer(c, http.StatusOK, gin.H{"deleted": true}, err)
}

func (s *Server) rotateSecret(c *gin.Context) {
	w, err := s.Console.RotateSecret(c.Request.Context(), principal(c).ProjectID, c.Param("id"))
	s.answer(c, http.StatusOK, w, err)
}

// keyView is an API key as clients see it: never its hash.
type keyView struct {
	ID        string    `json:"id"`
	ProjectID string    `json:"project_id"`
	Name      string    `json:"name"`
	Prefix    string    `json:"prefix"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
}

func viewKey(k project.APIKey) keyView {
	return keyView{ID: k.ID, ProjectID: k.ProjectID, Name: k.Name, Prefix: k.Prefix, Admin: k.Admin, CreatedAt: k.CreatedAt}
}

func (s *Server) createKey(c *gin.Context) {
	var in struct {
		Name string `json:"name"`
	}
	if !s.body(c, &in) {
		return
	}
	k, key, err := s.Console.CreateKey(c.Request.Context(), principal(c).ProjectID, in.Name)
	s.answer(c, http.StatusCreated, struct {
		keyView
		Key string `json:"key"`
	}{viewKey(k), key}, err)
}

func (s *Server) listKeys(c *gin.Context) {
	list(s, c, func(p project.ListParams) (project.Page[keyView], error) {
		page, err := s.Console.ListKeys(c.Request.Context(), principal(c).ProjectID, p)
		out := project.Page[keyView]{Items: make([]keyView, len(page.Items)), NextCursor: page.NextCursor}
		for i, k := range page.Items {
			out.Items[i] = viewKey(k)
		}
		return out, err
	})
}

func (s *Server) deleteKey(c *gin.Context) {
	err := s.Console.DeleteKey(c.Request.Context(), principal(c).ProjectID, c.Param("id"))
	s.answer(c, http.StatusOK, gin.H{"deleted": true}, err)
}

func (s *Server) createProject(c *gin.Context) {
	var in struct {
		Name string `json:"name"`
	}
	if !s.body(c, &in) {
		return
	}
	p, key, err := s.Console.CreateProject(c.Request.Context(), in.Name)
	s.answer(c, http.StatusCreated, struct {
		project.Project
		Key string `json:"key"`
	}{p, key}, err)
}

func (s *Server) listProjects(c *gin.Context) {
	list(s, c, func(p project.ListParams) (project.Page[project.Project], error) {
		return s.Console.ListProjects(c.Request.Context(), p)
	})
}

// testWebhook sends the endpoint a signed "webhook.test" delivery; its
// attempts can be followed at GET /api/console/dlq/{delivery_id}.
func (s *Server) testWebhook(c *gin.Context) {
	ctx := c.Request.Context()
	pid := principal(c).ProjectID
	w, err := s.Console.GetWebhook(ctx, pid, c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	id, err := s.Deliveries.SendTest(ctx, pid, w)
	s.answer(c, http.StatusAccepted, gin.H{"delivery_id": id}, err)
}
