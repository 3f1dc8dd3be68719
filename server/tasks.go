package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/riverhub/riverhub/channels"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/wstoken"
	"github.com/riverhub/riverhub/project"
)

// asyncAnswer is the answer to an async submission (and to a reconnect,
// without the first two fields).
type asyncAnswer struct {
	Message          string `json:"message,omitempty"`
	Status           string `json:"status,omitempty"`
	ChannelID        string `json:"channel_id"`
	ProjectID        string `json:"project_id"`
	WSToken          string `json:"ws_token"`
	WebsocketURL     string `json:"websocket_url"`
	WebsocketChannel string `json:"websocket_channel"`
}

func (s *Server) channelAnswer(pid, cid string) (asyncAnswer, error) {
	tok, err := s.Tokens.Issue(pid, cid)
	return asyncAnswer{ChannelID: cid, ProjectID: pid, WSToken: tok, WebsocketURL: s.wsURL,
		WebsocketChannel: wstoken.Topic(pid, cid)}, err
}

// prepare decodes a submission and resolves its workflow into a Task.
func (s *Server) prepare(c *gin.Context) (*channels.Task, []byte, bool) {
	body, err := readBody(c.Request, s.MaxBodyBytes)
	if err != nil {
		s.fail(c, err)
		return nil, nil, false
	}
	req, err := decodeTaskRequest(body)
	if err != nil {
		s.fail(c, err)
		return nil, nil, false
	}
	ctx := c.Request.Context()
	pid := principal(c).ProjectID
	wf, err := s.Console.GetWorkflow(ctx, pid, req.Workflow)
	if err != nil {
		s.fail(c, err)
		return nil, nil, false
	}
	t := &channels.Task{ChannelID: channels.NewChannelID(), ProjectID: pid, Workflow: wf, Messages: req.Messages,
		CustomerData: req.CustomerData, Metadata: req.Metadata, Events: req.EventTypes, DeliveryMethod: req.DeliveryMethod,
		Stream: wf.Stream}
	if req.Stream != nil {
		t.Stream = *req.Stream
	}
	if wf.StructuredOutputID != "" {
		o, err := s.Console.GetOutput(ctx, pid, wf.StructuredOutputID)
		if err != nil {
			s.fail(c, apperr.Invalidf("workflow %q refers to structured output %q, which no longer exists", wf.Name, wf.StructuredOutputID))
			return nil, nil, false
		}
		t.Schema, t.SchemaName = o.Schema, o.Name
	}
	ids, err := s.endpointsOf(ctx, pid, req.WebhookID, req.WebhookURL)
	if err != nil {
		s.fail(c, err)
		return nil, nil, false
	}
	if len(ids) > 0 {
		t.WebhookID = ids[0]
	}
	if len(ids) > 1 {
		t.WebhookIDs = ids
	}
	return t, body, true
}

// endpointsOf resolves the endpoints a submission sends its webhooks to:
// webhook_id's (it must exist: else 404), webhook_url's (the project's
// enabled endpoints registered with that URL: else 400, so no webhook goes
// to an address nobody registered, unsigned or past the address guard), or,
// with both, webhook_id's if its URL is webhook_url (else 400). None: every
// subscribed endpoint (nil).
func (s *Server) endpointsOf(ctx context.Context, pid, id, rawURL string) ([]string, error) {
	if id != "" {
		w, err := s.Console.GetWebhook(ctx, pid, id)
		if err != nil {
			return nil, err
		}
		if rawURL == "" {
			return []string{id}, nil
		}
		k1, _ := project.EndpointURLKey(w.URL)
		k2, _ := project.EndpointURLKey(rawURL)
		if k1 != k2 {
			return nil, apperr.Invalidf("webhook_id and webhook_url name different endpoints: %s is registered for %s, not %s; send one of them, or both for the same endpoint", id, w.URL, rawURL)
		}
		if !w.Enabled {
			return nil, disabledEndpoint(w)
		}
		return []string{id}, nil
	}
	if rawURL == "" {
		return nil, nil
	}
	ws, err := s.Console.WebhooksByURL(ctx, pid, rawURL)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, w := range ws {
		if w.Enabled {
			ids = append(ids, w.ID)
		}
	}
	switch {
	case len(ids) > 0:
		return ids, nil
	case len(ws) > 0:
		return nil, disabledEndpoint(ws[0])
	}
	return nil, apperr.Invalidf("webhook_url %s is not a webhook endpoint of this project: register it first (console: Webhooks, or POST /api/console/webhook), "+
		"then submit with its URL or its id as webhook_id; riverhub sends webhooks only to registered endpoints, signed with their secrets", rawURL)
}

func disabledEndpoint(w project.Webhook) error {
	return apperr.Invalidf("webhook endpoint %s (%s) is disabled; enable it (console: Webhooks, or PATCH /api/console/webhook/%s with {\"enabled\": true}) to send webhooks to it", w.ID, w.URL, w.ID)
}

// idemKey is a submission's claimed Idempotency-Key; zero: it sent none.
type idemKey struct {
	key, fingerprint, pid, cid string
}

// claimIdempotency claims the request's Idempotency-Key (if it sent one)
// for t, the fingerprint being route's and body's. prev is the first
// request's record when this one repeats it; ok is false when it answered
// the request already (the key was used with another body, or Redis
// failed). Unless prev is set, the caller settles the key.
func (s *Server) claimIdempotency(c *gin.Context, t *channels.Task, route string, body []byte) (k idemKey, prev *channels.Idempotent, ok bool) {
	key := c.GetHeader("Idempotency-Key")
	if key == "" {
		return idemKey{}, nil, true
	}
	k = idemKey{key: key, fingerprint: fingerprint(route, body), pid: t.ProjectID, cid: t.ChannelID}
	prev, err := s.Channels.ClaimIdempotency(c.Request.Context(), k.pid, k.key, k.fingerprint, k.cid)
	if err != nil {
		s.fail(c, err)
		return k, nil, false
	}
	return k, prev, true
}

// settleIdempotency confirms a claimed key when its request was accepted
// (repeats replay it), and releases it when the request was refused (a
// retry runs anew). A failure that leaves it unknown whether the task was
// accepted (Redis did not answer in time, and may have run the commands
// after the node stopped waiting) keeps the reservation: its lease runs
// out within seconds, and a repeat then replays the first answer if its
// channel exists, or submits afresh if not (ClaimIdempotency). One whose
// submission was taken back (channels.ErrWithdrawn) is known not accepted,
// and released like a refusal. So a
// submission answered 503 and retried with its key is one task, as
// docs/api.md promises.
func (s *Server) settleIdempotency(ctx context.Context, k idemKey, accepted bool, failure error) {
	e := apperr.As(failure)
	switch {
	case k.key == "":
	case accepted:
		s.Channels.ConfirmIdempotency(ctx, k.pid, k.key, k.fingerprint, k.cid)
	case errors.Is(failure, channels.ErrWithdrawn): // known not accepted: a retry goes ahead at once
		s.Channels.ReleaseIdempotency(ctx, k.pid, k.key, k.fingerprint, k.cid)
	case e == nil || e.Kind == apperr.Unavailable: // unknown: the reservation's lease decides
	default:
		s.Channels.ReleaseIdempotency(ctx, k.pid, k.key, k.fingerprint, k.cid)
	}
}

func fingerprint(route string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(route))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Server) submitAsync(c *gin.Context) {
	t, body, ok := s.prepare(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	ans, err := s.channelAnswer(t.ProjectID, t.ChannelID)
	if err != nil {
		s.fail(c, err)
		return
	}
	ans.Message, ans.Status = "success", string(channels.StatusPending)
	key, prev, ok := s.claimIdempotency(c, t, "async", body)
	if !ok {
		return
	}
	if prev != nil {
		if !prev.Done {
			s.fail(c, channels.ErrInProgress)
			return
		}
		// The first answer, with a fresh token (the first may have expired).
		first, err := s.channelAnswer(t.ProjectID, prev.ChannelID)
		if err != nil {
			s.fail(c, err)
			return
		}
		first.Message, first.Status = "success", string(channels.StatusPending)
		c.Header("Idempotent-Replayed", "true")
		c.JSON(http.StatusOK, first)
		return
	}
	err = s.Channels.Submit(ctx, t)
	s.settleIdempotency(ctx, key, err == nil, err)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, ans)
}

// submitSync runs the task while the client waits and answers with the
// final payload (status "success" or "error"; both are 200: the request
// was carried out, its outcome is in the payload).
func (s *Server) submitSync(c *gin.Context) {
	t, body, ok := s.prepare(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	key, prev, ok := s.claimIdempotency(c, t, "sync", body)
	if !ok {
		return
	}
	if prev != nil {
		s.replaySync(c, t.ProjectID, prev.ChannelID)
		return
	}
	msg, err := s.Channels.RunSync(ctx, t)
	// Accepted even if the client left: the channel finishes.
	s.settleIdempotency(ctx, key, err == nil || ctx.Err() != nil, err)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", msg)
}

// replaySync answers a repeated sync request with the first one's final
// payload, or 409 while it still runs.
func (s *Server) replaySync(c *gin.Context, pid, cid string) {
	v, err := s.Channels.Get(c.Request.Context(), pid, cid)
	if err != nil {
		if e := apperr.As(err); e != nil && e.Kind == apperr.NotFound {
			err = channels.ErrInProgress // claimed, not yet recorded
		}
		s.fail(c, err)
		return
	}
	if string(v.Message) == "null" {
		s.fail(c, channels.ErrInProgress)
		return
	}
	c.Header("Idempotent-Replayed", "true")
	c.Data(http.StatusOK, "application/json; charset=utf-8", v.Message)
}

// channelID reads the :channel_id parameter; anything but a UUID cannot be
// a channel, so it is "not found" like an unknown one.
func channelID(c *gin.Context, id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", apperr.NotFoundf("channel %q not found", id)
	}
	return u.String(), nil
}

func (s *Server) getChannel(c *gin.Context) {
	cid, err := channelID(c, c.Param("channel_id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	v, err := s.Channels.Get(c.Request.Context(), principal(c).ProjectID, cid)
	s.answer(c, http.StatusOK, v, err)
}

func (s *Server) reconnect(c *gin.Context) {
	var in struct {
		ChannelID string `json:"channel_id"`
	}
	if !s.body(c, &in) {
		return
	}
	if in.ChannelID == "" {
		s.fail(c, apperr.Invalidf("channel_id is required"))
		return
	}
	cid, err := channelID(c, in.ChannelID)
	if err != nil {
		s.fail(c, err)
		return
	}
	pid := principal(c).ProjectID
	if _, err := s.Channels.Get(c.Request.Context(), pid, cid); err != nil {
		s.fail(c, err)
		return
	}
	ans, err := s.channelAnswer(pid, cid)
	s.answer(c, http.StatusOK, ans, err)
}

// channelLog is a channel's record and audit timeline.
func (s *Server) channelLog(c *gin.Context) {
	cid, err := channelID(c, c.Param("channel_id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	v, tl, err := s.Channels.Timeline(c.Request.Context(), principal(c).ProjectID, cid)
	s.answer(c, http.StatusOK, gin.H{"channel": v, "timeline": tl}, err)
}

// callback settles an event-driven channel with its backend's result.
func (s *Server) callback(c *gin.Context) {
	cid, err := channelID(c, c.Param("channel_id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	body, err := readBody(c.Request, s.MaxBodyBytes)
	if err != nil {
		s.fail(c, err)
		return
	}
	cb, err := decodeCallback(body)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.Channels.Callback(c.Request.Context(), principal(c).ProjectID, cid, cb); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"received": true})
}

// playground runs a workflow for real without sending webhooks; an
// event-driven one completes with a simulated callback.
func (s *Server) playground(c *gin.Context) {
	t, _, ok := s.prepare(c)
	if !ok {
		return
	}
	t.Playground, t.WebhookID, t.WebhookIDs = true, "", nil
	ans, err := s.channelAnswer(t.ProjectID, t.ChannelID)
	if err != nil {
		s.fail(c, err)
		return
	}
	ans.Message, ans.Status = "success", string(channels.StatusPending)
	if err := s.Channels.Submit(c.Request.Context(), t); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, ans)
}

// listLogs is the request log: the project's channels, newest first,
// filtered by workflow, event_name, status and created time (from, to:
// RFC 3339).
func (s *Server) listLogs(c *gin.Context) {
	f := channels.LogFilter{Workflow: c.Query("workflow"), EventName: c.Query("event_name"), Status: channels.Status(c.Query("status"))}
	for _, q := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if v := c.Query(q.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				s.fail(c, apperr.Invalidf("%s must be an RFC 3339 time, such as 2026-01-05T12:34:56Z", q.name))
				return
			}
			*q.dst = t
		}
	}
	list(s, c, func(p project.ListParams) (project.Page[channels.LogItem], error) {
		return s.Channels.Logs(c.Request.Context(), principal(c).ProjectID, f, p)
	})
}
