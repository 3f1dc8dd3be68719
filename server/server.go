package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/channels"
	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/wstoken"
	"github.com/riverhub/riverhub/project"
	"github.com/riverhub/riverhub/web"
)

// Deps are what the server calls into.
type Deps struct {
	Console  *project.Store
	Channels *channels.Service
	// Deliveries is the webhook engine (dead letters, replay).
	Deliveries *dispatch.Engine
	// Sockets serves the Phoenix-protocol WebSocket (the realtime hub);
	// its credential is the ws_token in the query, not an API key.
	Sockets http.Handler
	Tokens  *wstoken.Issuer
	// Ready reports whether Redis answers (GET /readyz).
	Ready func(ctx context.Context) error
	// Registry serves /metrics; the server adds its HTTP metrics to it.
	Registry *prometheus.Registry
	Log      zerolog.Logger
	// PublicURL is the base of websocket_url and callback_url.
	PublicURL string
	// MaxBodyBytes limits request bodies (413 above it).
	MaxBodyBytes int64
	// RedisTimeout bounds each Redis command of an API request; past it
	// the request answers 503 unavailable. 0: the client's own timeouts.
	RedisTimeout time.Duration
	// OpenAPI is the API's description (openapi.yaml), served at
	// /openapi.yaml and /openapi.json; nil: not served.
	OpenAPI []byte
}

// Server is the HTTP handler.
type Server struct {
	Deps
	wsURL   string
	router  *gin.Engine
	reqs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
	// outages logs requests answered 503 for Redis, at most a few a
	// second however many fail.
	outages zerolog.Logger
}

// New builds the router.
func New(d Deps) *Server {
	gin.SetMode(gin.ReleaseMode)
	s := &Server{Deps: d, router: gin.New()}
	s.wsURL = websocketURL(d.PublicURL)
	s.outages = d.Log.Sample(&zerolog.BurstSampler{Burst: 3, Period: time.Second})
	s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_http_requests_total",
		Help: "HTTP requests by route and status."}, []string{"route", "method", "status"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "riverhub_http_request_duration_seconds",
		Help:    "HTTP request latency by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
		[]string{"route", "method"})
	if d.Registry != nil {
		d.Registry.MustRegister(s.reqs, s.latency)
	}
	s.routes()
	return s
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// websocketURL turns http(s)://host/base into ws(s)://host/base/socket, the
// endpoint a Phoenix client is given (it appends /websocket itself).
func websocketURL(public string) string {
	u := strings.TrimSuffix(public, "/")
	switch {
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://")
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + strings.TrimPrefix(u, "http://")
	}
	return u + "/socket"
}

func (s *Server) routes() {
	r := s.router
	r.Use(s.recoverer, s.observe)
	r.NoRoute(func(c *gin.Context) {
		s.fail(c, apperr.NotFoundf("no route %s %s", c.Request.Method, c.Request.URL.Path))
	})
	r.NoMethod(func(c *gin.Context) {
		c.AbortWithStatusJSON(http.StatusMethodNotAllowed, envelope{Error: "method_not_allowed", Message: "method not allowed on this route"})
	})
	r.HandleMethodNotAllowed = true

	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	// The browser console: static files; its API calls carry the key.
	r.GET("/", func(c *gin.Context) { c.Redirect(http.StatusFound, web.Prefix) })
	r.GET(web.Prefix+"*file", gin.WrapH(web.Handler()))
	r.HEAD(web.Prefix+"*file", gin.WrapH(web.Handler()))
	r.GET("/readyz", s.readyz)
	s.serveOpenAPI(r)
	if s.Registry != nil {
		h := promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{})
		r.GET("/metrics", gin.WrapH(h))
	}

	api := r.Group("", s.bound, s.auth)
	for _, p := range []string{"/v1/ai/async", "/api/v1/ai/async"} {
		api.POST(p, s.submitAsync)
	}
	for _, p := range []string{"/v1/ai", "/api/v1/ai"} {
		api.POST(p, s.submitSync)
	}
	api.POST("/api/v1/ai/reconnect", s.reconnect)
	api.POST("/v1/callback/:channel_id", s.callback)
	api.POST("/api/v1/callback/:channel_id", s.callback)
	api.GET("/api/v1/channels/:channel_id", s.getChannel)

	con := api.Group("/api/console")
	con.POST("/workflow", s.createWorkflow)
	con.GET("/workflow", s.listWorkflows)
	con.GET("/workflow/:name", s.getWorkflow)
	con.PUT("/workflow/:name", s.replaceWorkflow)
	con.DELETE("/workflow/:name", s.deleteWorkflow)

	con.POST("/structured-output", s.createOutput)
	con.GET("/structured-output", s.listOutputs)
	con.GET("/structured-output/:id", s.getOutput)
	con.DELETE("/structured-output/:id", s.deleteOutput)

	con.POST("/webhook", s.createWebhook)
	con.GET("/webhook", s.listWebhooks)
	con.GET("/webhook/:id", s.getWebhook)
	con.PATCH("/webhook/:id", s.updateWebhook)
	con.DELETE("/webhook/:id", s.deleteWebhook)
	con.POST("/webhook/:id/rotate-secret", s.rotateSecret)
	con.POST("/webhook/:id/test", s.testWebhook)

	con.POST("/keys", s.createKey)
	con.GET("/keys", s.listKeys)
	con.DELETE("/keys/:id", s.deleteKey)

	con.POST("/projects", s.adminOnly, s.createProject)
	con.GET("/projects", s.adminOnly, s.listProjects)

	con.GET("/logs/:channel_id", s.channelLog)

	con.POST("/playground", s.playground)
	con.GET("/logs", s.listLogs)

	con.GET("/stats", s.deliveryStats)
	con.GET("/dlq", s.listDeadLetters)
	con.POST("/dlq/replay", s.replayDeadLetters)
	con.GET("/dlq/:id", s.getDelivery)
	con.POST("/dlq/:id/replay", s.replayDeadLetter)
	con.DELETE("/dlq/:id", s.discardDeadLetter)

	// A server built without the hub (Deps.Sockets nil) says so at the
	// socket endpoint, rather than answering "not found" (which a client
	// would read as a wrong URL).
	if s.Sockets != nil {
		r.GET("/socket/websocket", gin.WrapH(s.Sockets))
	} else {
		r.GET("/socket/websocket", s.notImplemented)
	}
}

func (s *Server) notImplemented(c *gin.Context) {
	c.AbortWithStatusJSON(http.StatusNotImplemented, envelope{Error: "not_implemented",
		Message: "this part of the API is not available in this version of riverhub yet"})
}

func (s *Server) recoverer(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log().Error().Interface("panic", v).Str("route", c.FullPath()).Msg("handler panicked")
			s.fail(c, apperr.New(apperr.Internal, "internal", "internal error"))
		}
	}()
	c.Next()
}

func (s *Server) log() *zerolog.Logger { return &s.Log }

// observe counts requests and their latency by route.
func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	s.reqs.WithLabelValues(route, c.Request.Method, strconv.Itoa(c.Writer.Status())).Inc()
	s.latency.WithLabelValues(route, c.Request.Method).Observe(time.Since(start).Seconds())
}

func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if s.Ready != nil {
		if err := s.Ready(ctx); err != nil {
			c.JSON(http.StatusServiceUnavailable, envelope{Error: "not_ready", Message: "redis does not answer"})
			return
		}
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}

// bound limits how long each Redis command of the request may take, so an
// outage answers 503 within RedisTimeout (see fail).
func (s *Server) bound(c *gin.Context) {
	c.Request = c.Request.WithContext(rdb.Bound(c.Request.Context(), s.RedisTimeout))
}

// auth resolves the bearer key to a project.
func (s *Server) auth(c *gin.Context) {
	h := c.GetHeader("Authorization")
	key, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		key, ok = strings.CutPrefix(h, "bearer ")
	}
	if !ok || strings.TrimSpace(key) == "" {
		s.fail(c, project.ErrUnauthorized)
		return
	}
	p, err := s.Console.Authenticate(c.Request.Context(), strings.TrimSpace(key))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Set("principal", p)
}

func principal(c *gin.Context) project.Principal {
	p, _ := c.Get("principal")
	return p.(project.Principal)
}

func (s *Server) adminOnly(c *gin.Context) {
	if !principal(c).Admin {
		s.fail(c, apperr.New(apperr.Forbidden, "forbidden", "only the admin key (RIVERHUB_ADMIN_KEY) manages projects"))
	}
}

// body reads and decodes the request body into v.
func (s *Server) body(c *gin.Context, v any) bool {
	b, err := readBody(c.Request, s.MaxBodyBytes)
	if err == nil {
		err = decodeJSON(b, v)
	}
	if err != nil {
		s.fail(c, err)
		return false
	}
	return true
}

func listParams(c *gin.Context) (project.ListParams, error) {
	p := project.ListParams{Cursor: c.Query("cursor")}
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return p, apperr.Invalidf("limit must be a number between 1 and 500")
		}
		p.Limit = n
	}
	return p, nil
}
