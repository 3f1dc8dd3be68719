package server

import (
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/project"
)

func (s *Server) listDeadLetters(c *gin.Context) {
	list(s, c, func(p project.ListParams) (project.Page[dispatch.Delivery], error) {
		return s.Deliveries.DeadLetters(c.Request.Context(), principal(c).ProjectID, c.Query("webhook_id"), p)
	})
}

func (s *Server) getDelivery(c *gin.Context) {
	d, err := s.Deliveries.Get(c.Request.Context(), principal(c).ProjectID, c.Param("id"))
	s.answer(c, http.StatusOK, d, err)
}

func (s *Server) replayDeadLetter(c *gin.Context) {
	err := s.Deliveries.Replay(c.Request.Context(), principal(c).ProjectID, c.Param("id"))
	s.answer(c, http.StatusOK, gin.H{"replayed": 1}, err)
}

// replayDeadLetters replays every dead letter of the project, or of one
// endpoint with {"webhook_id": "..."} (body optional).
func (s *Server) replayDeadLetters(c *gin.Context) {
	var in struct {
		WebhookID string `json:"webhook_id"`
	}
	b, err := readBody(c.Request, s.MaxBodyBytes)
	if err == nil && len(b) > 0 {
		err = decodeJSON(b, &in)
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	if in.WebhookID == "" {
		in.WebhookID = c.Query("webhook_id")
	}
	n, err := s.Deliveries.ReplayAll(c.Request.Context(), principal(c).ProjectID, in.WebhookID)
	s.answer(c, http.StatusOK, gin.H{"replayed": n}, err)
}

func (s *Server) discardDeadLetter(c *gin.Context) {
	err := s.Deliveries.Discard(c.Request.Context(), principal(c).ProjectID, c.Param("id"))
	s.answer(c, http.StatusOK, gin.H{"deleted": true}, err)
}

// deliveryStats are the project's webhook attempts per minute, by outcome,
// with duration percentiles (?minutes=, default 60, at most 120).
func (s *Server) deliveryStats(c *gin.Context) {
	minutes := 60
	if v := c.Query("minutes"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 120 {
			s.fail(c, apperr.Invalidf("minutes must be a number between 1 and 120"))
			return
		}
		minutes = n
	}
	st, err := s.Deliveries.Stats(c.Request.Context(), principal(c).ProjectID, minutes)
	s.answer(c, http.StatusOK, st, err)
}
