package metrics_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"go.yaml.in/yaml/v3"

	"github.com/idemsink/idemsink/internal/metrics"
)

var deploy = filepath.Join("..", "..", "deploy")

// targetLabels are attached by Prometheus to every scraped series.
var targetLabels = []string{"job", "instance"}

// The alert rules and the Grafana dashboard query only metrics the daemon
// registers, with labels those metrics have: a renamed metric or label
// fails here instead of leaving an alert that can never fire or an empty
// panel.
func TestRulesQueryRegisteredMetrics(t *testing.T) {
	reg := daemonMetrics(t)
	groups, errs := rulefmt.ParseFile(filepath.Join(deploy, "prometheus", "alerts.yaml"), false,
		model.UTF8Validation, parser.NewParser(parser.Options{}), slog.Default())
	if len(errs) > 0 {
		t.Fatalf("alerts.yaml: %v", errs)
	}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			name := r.Alert + r.Record
			labels, problems := check(r.Expr, reg)
			// Templates may only use labels the result can carry.
			used := map[string]bool{}
			for _, text := range r.Annotations {
				for _, m := range regexp.MustCompile(`\$labels\.(\w+)`).FindAllStringSubmatch(text, -1) {
					used[m[1]] = true
				}
			}
			for l := range used {
				if !slices.Contains(labels, l) {
					problems = append(problems, fmt.Sprintf("annotation uses $labels.%s, not a label of any series queried", l))
				}
			}
			for _, p := range problems {
				t.Errorf("rule %s: %s", name, p)
			}
		}
	}
	if n == 0 {
		t.Fatal("alerts.yaml has no rules")
	}
}

func TestDashboardQueriesRegisteredMetrics(t *testing.T) {
	reg := daemonMetrics(t)
	b, err := os.ReadFile(filepath.Join(deploy, "grafana", "idemsink.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("idemsink.json: %v", err)
	}
	// Grafana's own variables are not PromQL; any duration stands in.
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	n := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				n++
				_, problems := check(grafanaVars.Replace(tg.Expr), reg)
				for _, pr := range problems {
					t.Errorf("panel %q: %s", p.Title, pr)
				}
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		n++
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Definition)
			continue
		}
		labels, problems := check(m[1], reg)
		if !slices.Contains(labels, m[2]) {
			problems = append(problems, fmt.Sprintf("label %s is not a label of %s", m[2], m[1]))
		}
		for _, pr := range problems {
			t.Errorf("variable %s: %s", v.Name, pr)
		}
	}
	if n == 0 {
		t.Fatal("the dashboard has no queries")
	}
}

type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// Every alert has a promtool test case where it fires and one where it
// must not.
func TestEveryAlertHasPromtoolTests(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	for path, v := range map[string]any{"alerts.yaml": &rules, "alerts_test.yaml": &tests} {
		b, err := os.ReadFile(filepath.Join(deploy, "prometheus", path))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !fires[r.Alert] {
				t.Errorf("alert %s: no promtool test where it fires", r.Alert)
			}
			if !silent[r.Alert] {
				t.Errorf("alert %s: no promtool test where it must not fire", r.Alert)
			}
		}
	}
}

// The checker itself finds what it is there to find.
func TestCheck(t *testing.T) {
	reg := daemonMetrics(t)
	for _, tc := range []struct {
		expr string
		want string // "" for no problem
	}{
		{expr: `idemsink_records_total{pipeline="orders", result="inserted", job="idemsink"}`},
		{expr: `histogram_quantile(0.99, sum by (le, phase) (rate(idemsink_batch_seconds_bucket[5m])))`},
		{expr: `sum by (topic, partition) (idemsink_consumer_lag_records) > 0 unless on (job, instance) process_start_time_seconds`},
		{expr: `rate(idemsink_kafka_fetch_bytes_total{topic="orders", node_id="1"}[5m])`},
		{expr: `idemsink_recordz_total`, want: "unknown metric idemsink_recordz_total"},
		{expr: `idemsink_records_total_count`, want: "unknown metric idemsink_records_total_count"},
		{expr: `idemsink_records_total{pipline="x"}`, want: "idemsink_records_total has no label pipline"},
		{expr: `sum by (pipline) (idemsink_records_total)`, want: "grouping by pipline"},
		{expr: `idemsink_ready * on (pipeline) idemsink_buffered_records`, want: "matching on pipeline"},
		{expr: `sum(`, want: "parse"},
	} {
		_, problems := check(tc.expr, reg)
		got := strings.Join(problems, "; ")
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("check(%s) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// check parses a PromQL expression and reports every metric it selects
// that reg does not hold, every label matched, grouped or joined on that
// none of the selected metrics has, and returns the labels the selected
// series can carry.
func check(expr string, reg map[string][]string) (labels []string, problems []string) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, []string{fmt.Sprintf("parse %q: %v", expr, err)}
	}
	have := map[string]bool{}
	for _, l := range targetLabels {
		have[l] = true
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		ls, ok := reg[vs.Name]
		if !ok {
			problems = append(problems, "unknown metric "+vs.Name)
			return nil
		}
		for _, l := range ls {
			have[l] = true
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel && !slices.Contains(ls, m.Name) && !slices.Contains(targetLabels, m.Name) {
				problems = append(problems, fmt.Sprintf("%s has no label %s", vs.Name, m.Name))
			}
		}
		return nil
	})
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.AggregateExpr:
			for _, l := range n.Grouping {
				if !have[l] {
					problems = append(problems, fmt.Sprintf("grouping by %s, a label of none of the metrics selected", l))
				}
			}
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				for _, l := range append(slices.Clone(n.VectorMatching.MatchingLabels), n.VectorMatching.Include...) {
					if !have[l] {
						problems = append(problems, fmt.Sprintf("matching on %s, a label of none of the metrics selected", l))
					}
				}
			}
		}
		return nil
	})
	for l := range have {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	return labels, problems
}

// daemonMetrics returns, by series name, the label names of every metric
// the daemon registers: cmd/consumer's serve registers the Go and process
// collectors and metrics.New on one registry, and internal/consume hooks
// kprom in with the namespace idemsink_kafka on the same registry.
// Histograms contribute their _bucket (with le), _sum and _count series.
func daemonMetrics(t *testing.T) map[string][]string {
	t.Helper()
	rec := &recorder{reg: prometheus.NewRegistry()}
	rec.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics.New(rec)
	// kprom registers its collectors when the client is created; the
	// client dials nothing until it is used.
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"),
		kgo.WithHooks(kprom.NewMetrics("idemsink_kafka", kprom.Registerer(rec))))
	if err != nil {
		t.Fatal(err)
	}
	cl.Close()

	descRE := regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)
	out := map[string][]string{}
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read %s (client_golang changed its Desc.String format?)", d)
			}
			var labels []string
			for _, kv := range strings.Split(m[2], ",") {
				if k, _, ok := strings.Cut(kv, "="); ok {
					labels = append(labels, k)
				}
			}
			for _, l := range strings.Split(m[3], ",") {
				if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
					labels = append(labels, l)
				}
			}
			switch c.(type) {
			case prometheus.Histogram, *prometheus.HistogramVec:
				out[m[1]+"_bucket"] = append(slices.Clone(labels), "le")
				out[m[1]+"_sum"] = labels
				out[m[1]+"_count"] = labels
			default:
				out[m[1]] = labels
			}
		}
	}
	for _, name := range []string{"idemsink_records_total", "idemsink_batch_seconds_bucket", "idemsink_kafka_connects_total", "process_start_time_seconds"} {
		if _, ok := out[name]; !ok {
			t.Fatalf("%s is not among the metrics read from the registry: the test lost track of the daemon", name)
		}
	}
	return out
}

// recorder registers on a real registry (so that conflicts still fail) and
// keeps the collectors, whose descriptions name every metric before any
// series exists.
type recorder struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }
