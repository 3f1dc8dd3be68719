package server

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/rdb"
)

// statusOf is the one mapping from error kinds to HTTP statuses.
func statusOf(k apperr.Kind) int {
	switch k {
	case apperr.Invalid:
		return http.StatusBadRequest
	case apperr.Unauthorized:
		return http.StatusUnauthorized
	case apperr.Forbidden:
		return http.StatusForbidden
	case apperr.NotFound:
		return http.StatusNotFound
	case apperr.Conflict:
		return http.StatusConflict
	case apperr.TooLarge:
		return http.StatusRequestEntityTooLarge
	case apperr.RateLimited:
		return http.StatusTooManyRequests
	case apperr.Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

type envelope struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// fail answers err in the envelope. Errors that are not application errors
// are logged and answered as "internal" without their text.
func (s *Server) fail(c *gin.Context, err error) {
	e := apperr.As(err)
	if e == nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			e = tooLarge(mbe.Limit)
		}
	}
	if e == nil && rdb.Unavailable(err) {
		if c.Request.Context().Err() == nil { // else the client left: nothing to tell
			s.outages.Warn().Err(err).Str("route", c.FullPath()).Msg("redis did not answer; answered 503")
		}
		e = errUnavailable
	}
	if e == nil {
		s.log().Error().Err(err).Str("route", c.FullPath()).Msg("request failed")
		e = &apperr.Error{Kind: apperr.Internal, Code: "internal", Message: "internal error; see the server log"}
	}
	if e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	c.AbortWithStatusJSON(statusOf(e.Kind), envelope{Error: e.Code, Message: e.Message})
}

// errUnavailable answers a request that Redis could not serve in time
// (down, restarting, failing over, too slow): a retryable 503, so clients
// and load balancers can tell it from a bug.
var errUnavailable = &apperr.Error{Kind: apperr.Unavailable, Code: "unavailable",
	Message: "the service is briefly unavailable (its data store did not answer); retry after Retry-After seconds", RetryAfter: 1}

func tooLarge(limit int64) *apperr.Error {
	return apperr.New(apperr.TooLarge, "payload_too_large", "request body is larger than %d bytes", limit)
}
