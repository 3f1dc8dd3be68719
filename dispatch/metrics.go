package dispatch

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	enqueued  prometheus.Counter
	cancelled prometheus.Counter
	claimed   prometheus.Counter
	reclaimed prometheus.Counter
	attempts  *prometheus.CounterVec
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
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_delivery_attempts_total",
			Help: "Delivery attempts recorded by this node, by verdict (ok, retry, dead)."}, []string{"verdict"}),
	}
	if reg == nil {
		return m
	}
	depth := func(key string) func() float64 {
		return func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			n, err := e.rdb.ZCard(ctx, key).Result()
			if err != nil {
				return -1
			}
			return float64(n)
		}
	}
	reg.MustRegister(m.enqueued, m.cancelled, m.claimed, m.reclaimed, m.attempts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_deliveries_scheduled",
			Help: "Deliveries waiting for an attempt (all nodes)."}, depth(e.dueKey)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_deliveries_in_flight",
			Help: "Deliveries leased for an attempt (all nodes)."}, depth(e.leaseKey)))
	return m
}
