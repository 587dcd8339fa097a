package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestUIJobsPanelRunsAndCancelsJobs: tether-server (with --http) and two
// real agents labelled role=e2e; from the page's Jobs panel, a job runs
// `echo hello jobs` on the devices of the label filter and shows its
// progress until done; a job that waits for a device that never comes is
// cancelled from the panel.
func TestUIJobsPanelRunsAndCancelsJobs(t *testing.T) {
	exe := findChromium(t)
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", grpcAddr, "--http", httpAddr, "--node", "jobs-node")
	waitListening(t, grpcAddr)
	waitListening(t, httpAddr)
	base := "http://" + httpAddr
	for _, id := range []string{"job-ui-1", "job-ui-2"} {
		start(t, "tether-agent", "--server", grpcAddr, "--device-id", id, "--config", writeAgentConfig(t, ""))
		waitOnline(t, base, id, 20*time.Second)
	}

	b := newBrowser(t, exe)
	b.do(t, chromedp.Navigate(base+"/"))
	b.waitFor(t, "page live", 15*time.Second, `
		document.getElementById('conn').dataset.state === 'live' ? '' : 'connection state: ' + document.getElementById('conn-text').textContent`)
	b.do(t, chromedp.SendKeys(chromedp.CSS("#f-labels"), "role=e2e"))
	b.do(t, chromedp.Click(chromedp.CSS("#jobs summary")))
	b.waitFor(t, "jobs panel open with the filter as target", 5*time.Second, `(() => {
		if (!document.getElementById('jobs').open) return 'panel closed';
		const t = document.getElementById('job-target').textContent;
		if (!/role=e2e/.test(t)) return 'target ' + t;
		return document.getElementById('job-create').disabled ? 'button disabled' : '';
	})()`)
	b.do(t,
		chromedp.SendKeys(chromedp.CSS("#job-args"), "hello jobs"),
		chromedp.Click(chromedp.CSS("#job-create")),
	)
	b.waitFor(t, "the job done on both devices", 30*time.Second, `(() => {
		const tr = document.querySelector('#job-rows tr');
		if (!tr) return 'no job row; message: ' + document.getElementById('job-msg').textContent;
		if (tr.dataset.state !== 'JOB_STATE_DONE') return 'state ' + tr.dataset.state + ': ' + tr.textContent;
		return /2 ok of 2/.test(tr.textContent) ? '' : 'row ' + tr.textContent;
	})()`)
	jobID := evalT[string](t, b, `document.querySelector('#job-rows tr').dataset.id`)
	b.screenshot(t, "20-jobs-done.png")
	b.checkAccessibility(t, "jobs panel")

	// The results, through the same API the panel uses.
	var res struct {
		Results []struct {
			DeviceID string `json:"deviceId"`
			State    string `json:"state"`
			Output   string `json:"output"`
		} `json:"results"`
	}
	if err := getJSON(base+"/v1/jobs/"+jobID+"/results", &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 2 {
		t.Fatalf("results: %+v", res)
	}
	for _, r := range res.Results {
		if r.State != "JOB_DEVICE_STATE_SUCCEEDED" || r.Output != "hello jobs\n" {
			t.Errorf("result %+v", r)
		}
	}

	// A job that waits for a device that never comes online: cancelled
	// from the panel.
	body, _ := json.Marshal(map[string]any{"name": "echo", "target": map[string]any{"deviceIds": []string{"job-ui-never"}},
		"offlinePolicy": "OFFLINE_POLICY_WAIT", "waitDeadline": "600s"})
	resp, err := http.Post(base+"/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		Job struct {
			JobID string `json:"jobId"`
		} `json:"job"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != 200 || created.Job.JobID == "" {
		t.Fatalf("POST /v1/jobs: %d %+v", resp.StatusCode, created)
	}
	waiting := `document.querySelector('#job-rows tr[data-id="` + created.Job.JobID + `"]')`
	b.waitFor(t, "the waiting job listed as running", 10*time.Second, `(() => {
		const tr = `+waiting+`;
		return tr && tr.dataset.state === 'JOB_STATE_RUNNING' ? '' : 'row ' + (tr ? tr.dataset.state : 'missing');
	})()`)
	b.do(t, chromedp.Click(chromedp.CSS(`#job-rows tr[data-id="`+created.Job.JobID+`"] button`)))
	b.waitFor(t, "the waiting job cancelled", 10*time.Second, `(() => {
		const tr = `+waiting+`;
		if (!tr || tr.dataset.state !== 'JOB_STATE_CANCELLED') return 'row ' + (tr ? tr.dataset.state : 'missing');
		return /cancelled/.test(document.getElementById('job-msg').textContent) ? '' : 'message ' + document.getElementById('job-msg').textContent;
	})()`)
	b.screenshot(t, "21-job-cancelled.png")
	if s := evalT[string](t, b, `document.querySelector('#job-rows tr[data-id="`+created.Job.JobID+`"]').textContent`); !strings.Contains(s, "Cancelled") {
		t.Errorf("cancelled row reads %q", s)
	}
	b.checkConsole(t, nil)
}
