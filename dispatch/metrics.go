package dispatch

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

type metrics struct {
	enqueued  prometheus.Counter
	cancelled prometheus.Counter
	claimed   prometheus.Counter
	reclaimed prometheus.Counter
	nudged    prometheus.Counter
	attempts  *prometheus.CounterVec
	paused    prometheus.Counter
	// transitions counts endpoint circuit changes by kind (opened,
	// reopened, closed, disable).
	transitions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, e *Engine) metrics {
	m := metrics{
		cancelled: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_deliveries_cancelled_total",
			Help: "Deliveries whose retries were cancelled (their channel was settled)."}),
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_deliveries_enqueued_total",
			Help: "Webhook deliveries created by this node."}),
		claimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_deliveries_claimed_total",
			Help: "Delivery attempts claimed by this node."}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_deliveries_reclaimed_total",
			Help: "Deliveries made due again by this node after their lease expired."}),
		nudged: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_schedule_nudges_total",
			Help: "Nudges received by this node: some node scheduled deliveries due sooner than the claimer's next look."}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_delivery_attempts_total",
			Help: "Delivery attempts recorded by this node, by verdict (ok, retry, dead)."}, []string{"verdict"}),
		paused: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_deliveries_paused_total",
			Help: "Deliveries that began waiting, without an attempt, for an endpoint whose circuit is open."}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_endpoint_transitions_total",
			Help: "Endpoint circuit changes seen by this node, by change (opened, reopened, closed, disable)."}, []string{"change"}),
	}
	if reg == nil {
		return m
	}
	leased := func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cards := make([]*redis.IntCmd, len(e.parts))
		if err := e.pipelined(ctx, func(p redis.Pipeliner) {
			for k, pt := range e.parts {
				cards[k] = p.ZCard(ctx, pt.leaseKey)
			}
		}); err != nil {
			return -1
		}
		return float64(sumOf(cards))
	}
	reg.MustRegister(m.enqueued, m.cancelled, m.claimed, m.reclaimed, m.nudged, m.attempts, m.paused, m.transitions, endpointStates{e},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_deliveries_scheduled",
			Help: "Deliveries scheduled for an attempt, due or later (all nodes; those waiting for an open endpoint are riverhub_deliveries_waiting_for_endpoint)."}, e.scheduled),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_deliveries_in_flight",
			Help: "Deliveries leased for an attempt (all nodes)."}, leased))
	return m
}

// endpointStates exports how many endpoints are degraded, open or
// probing (all nodes; the rest are healthy or disabled), from the hash of
// endpoints that are not healthy: one read, no per-endpoint labels.
type endpointStates struct{ e *Engine }

var endpointStatesDesc = prometheus.NewDesc("riverhub_endpoints_unhealthy",
	"Webhook endpoints that are not healthy, by state (degraded, open, probing).", []string{"state"}, nil)

var waitingDesc = prometheus.NewDesc("riverhub_deliveries_waiting_for_endpoint",
	"Deliveries waiting, without attempts, for an endpoint whose circuit is open (all nodes).", nil, nil)

func (c endpointStates) Describe(ch chan<- *prometheus.Desc) {
	ch <- endpointStatesDesc
	ch <- waitingDesc
}

func (c endpointStates) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	all := make([]*redis.MapStringStringCmd, len(c.e.parts))
	if err := c.e.pipelined(ctx, func(p redis.Pipeliner) {
		for k, pt := range c.e.parts {
			all[k] = p.HGetAll(ctx, pt.unhealthyKey)
		}
	}); err != nil {
		return
	}
	n := map[string]int{"degraded": 0, "open": 0, "probing": 0}
	var cards []*redis.IntCmd
	_ = c.e.pipelined(ctx, func(p redis.Pipeliner) {
		for k, pt := range c.e.parts {
			for whid, st := range all[k].Val() {
				n[st]++
				cards = append(cards, p.ZCard(ctx, pt.waitKey(whid)))
			}
		}
	})
	ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(sumOf(cards)))
	for st, k := range n {
		ch <- prometheus.MustNewConstMetric(endpointStatesDesc, prometheus.GaugeValue, float64(k), st)
	}
}

// scheduled counts the deliveries in the projects' due sets, of every
// partition.
func (e *Engine) scheduled() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pids := make([]*redis.StringSliceCmd, len(e.parts))
	if err := e.pipelined(ctx, func(p redis.Pipeliner) {
		for k, pt := range e.parts {
			pids[k] = p.ZRange(ctx, pt.projectsKey, 0, -1)
		}
	}); err != nil {
		return -1
	}
	var cards []*redis.IntCmd
	if err := e.pipelined(ctx, func(p redis.Pipeliner) {
		for k, pt := range e.parts {
			for _, pid := range pids[k].Val() {
				cards = append(cards, p.ZCard(ctx, pt.dueOf(pid)))
			}
		}
	}); err != nil {
		return -1
	}
	return float64(sumOf(cards))
}

// sumOf is the sum of the counts cards answered (a failed one counts 0).
func sumOf(cards []*redis.IntCmd) int64 {
	n := int64(0)
	for _, c := range cards {
		n += c.Val()
	}
	return n
}
