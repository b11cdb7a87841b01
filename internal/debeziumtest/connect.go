package debeziumtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Connect is a Kafka Connect worker's REST API.
type Connect struct {
	// URL is the worker's listener, e.g. http://127.0.0.1:18083.
	URL string
	hc  http.Client
}

// NewConnect returns a client of the worker at base.
func NewConnect(base string) *Connect {
	return &Connect{URL: strings.TrimRight(base, "/"), hc: http.Client{Timeout: 30 * time.Second}}
}

// Create creates a connector with the given configuration.
func (c *Connect) Create(ctx context.Context, name string, config map[string]string) error {
	body, err := json.Marshal(map[string]any{"name": name, "config": config})
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/connectors", body, nil)
}

// Delete removes a connector; its task stops.
func (c *Connect) Delete(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/connectors/"+url.PathEscape(name), nil, nil)
}

// Status is a connector's state and its tasks' states, as the worker
// reports them.
type Status struct {
	Connector struct {
		State string `json:"state"`
		Trace string `json:"trace"`
	} `json:"connector"`
	Tasks []struct {
		ID    int    `json:"id"`
		State string `json:"state"`
		Trace string `json:"trace"`
	} `json:"tasks"`
}

// Running reports whether the connector and at least one task run; a failed
// one is an error carrying its stack trace.
func (s Status) Running() (bool, error) {
	if s.Connector.State == "FAILED" {
		return false, fmt.Errorf("connector failed: %s", s.Connector.Trace)
	}
	for _, t := range s.Tasks {
		if t.State == "FAILED" {
			return false, fmt.Errorf("task %d failed: %s", t.ID, t.Trace)
		}
	}
	if s.Connector.State != "RUNNING" || len(s.Tasks) == 0 {
		return false, nil
	}
	for _, t := range s.Tasks {
		if t.State != "RUNNING" {
			return false, nil
		}
	}
	return true, nil
}

// Status returns a connector's status.
func (c *Connect) Status(ctx context.Context, name string) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/connectors/"+url.PathEscape(name)+"/status", nil, &s)
	return s, err
}

func (c *Connect) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode %q: %w", method, path, b, err)
		}
	}
	return nil
}
