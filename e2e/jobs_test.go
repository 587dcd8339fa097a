package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testredis"
)

type jobJSON struct {
	JobID    string `json:"jobId"`
	State    string `json:"state"`
	Runner   string `json:"runner"`
	Total    int    `json:"total"`
	Progress struct {
		Pending    int `json:"pending"`
		Dispatched int `json:"dispatched"`
		Succeeded  int `json:"succeeded"`
	} `json:"progress"`
}

func getJob(base, id string) (jobJSON, error) {
	var r struct {
		Job jobJSON `json:"job"`
	}
	err := getJSON(base+"/v1/jobs/"+id, &r)
	return r.Job, err
}

// TestAJobSurvivesItsRunnersCrash: two replicas on one Redis, three
// agents on each; a job at 1 device/s is created, and the replica running
// it is killed (SIGKILL) after two devices answered. The other replica
// resumes the job once the runner lease (3 s) lapses and finishes it:
// every device has a final result, and no agent ran the command twice.
func TestAJobSurvivesItsRunnersCrash(t *testing.T) {
	redis := testredis.Start(t)
	g1, h1, g2, h2 := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	servers := map[string]*proc{}
	bases := map[string]string{"jc-r1": "http://" + h1, "jc-r2": "http://" + h2}
	for node, a := range map[string][2]string{"jc-r1": {g1, h1}, "jc-r2": {g2, h2}} {
		servers[node] = start(t, "tether-server", "--listen", a[0], "--http", a[1], "--node", node, "--redis", redis.URL(),
			"--job-lease-ttl", "3s", "--lease-ttl", "4s")
		waitListening(t, a[0])
		waitListening(t, a[1])
	}
	agents := map[string]*proc{}
	home := map[string]string{}
	for i := 1; i <= 6; i++ {
		id := fmt.Sprintf("jc-%d", i)
		node, addr := "jc-r1", g1
		if i%2 == 0 {
			node, addr = "jc-r2", g2
		}
		agents[id] = start(t, "tether-agent", "--server", addr, "--device-id", id, "--config", writeAgentConfig(t, ""))
		home[id] = node
		waitOnline(t, bases[node], id, 20*time.Second)
	}

	body, _ := json.Marshal(map[string]any{"name": "echo", "args": []string{"once"}, "target": map[string]any{"labelSelector": "role=e2e"},
		"rate": 1, "concurrency": 1, "deviceTimeout": "5s"})
	resp, err := http.Post(bases["jc-r2"]+"/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		Job jobJSON `json:"job"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != 200 || created.Job.Total != 6 {
		t.Fatalf("POST /v1/jobs: %d %+v", resp.StatusCode, created)
	}
	id := created.Job.JobID

	var runner string
	eventually(t, 20*time.Second, func() error {
		j, err := getJob(bases["jc-r2"], id)
		if err != nil {
			return err
		}
		if j.Runner == "" || j.Progress.Succeeded < 2 {
			return fmt.Errorf("job %+v", j)
		}
		runner = j.Runner
		return nil
	})
	survivor := "jc-r1"
	if runner == "jc-r1" {
		survivor = "jc-r2"
	}
	servers[runner].signal(syscall.SIGKILL)
	t.Logf("killed the runner %s; %s should resume the job", runner, survivor)

	var final jobJSON
	eventually(t, 60*time.Second, func() error {
		j, err := getJob(bases[survivor], id)
		if err != nil {
			return err
		}
		if j.State != "JOB_STATE_DONE" {
			return fmt.Errorf("job %+v", j)
		}
		final = j
		return nil
	})
	var res struct {
		Results []struct {
			DeviceID string `json:"deviceId"`
			State    string `json:"state"`
			Node     string `json:"node"`
			Error    string `json:"error"`
		} `json:"results"`
	}
	if err := getJSON(bases[survivor]+"/v1/jobs/"+id+"/results", &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 6 {
		t.Fatalf("results: %+v", res)
	}
	for _, r := range res.Results {
		ran := strings.Count(agents[r.DeviceID].out.String(), "msg=command ")
		t.Logf("%s (on %s): %s, ran %d time(s) %s", r.DeviceID, home[r.DeviceID], r.State, ran, r.Error)
		switch {
		case ran > 1:
			t.Errorf("%s ran the job's command %d times", r.DeviceID, ran)
		case r.State == "JOB_DEVICE_STATE_PENDING" || r.State == "JOB_DEVICE_STATE_DISPATCHED":
			t.Errorf("%s has no final result: %s", r.DeviceID, r.State)
		case home[r.DeviceID] == survivor && r.State != "JOB_DEVICE_STATE_SUCCEEDED" && r.State != "JOB_DEVICE_STATE_UNKNOWN":
			t.Errorf("%s, on the surviving replica, ended %s", r.DeviceID, r.State)
		case r.State == "JOB_DEVICE_STATE_SUCCEEDED" && ran != 1:
			t.Errorf("%s SUCCEEDED but ran %d times", r.DeviceID, ran)
		}
	}
	if !strings.Contains(servers[survivor].out.String(), "job runner started") {
		t.Errorf("the surviving replica's log does not show it resumed the job")
	}
	t.Logf("job after the resume: %+v", final)
}

// TestJobsThroughTheStandaloneGateway: tether-gateway serves the JobService
// routes: a job runs on the agent, its results read back, and bad requests
// are 4xx JSON errors.
func TestJobsThroughTheStandaloneGateway(t *testing.T) {
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", grpcAddr, "--node", "gw-jobs")
	waitListening(t, grpcAddr)
	start(t, "tether-gateway", "--listen", httpAddr, "--server", grpcAddr)
	waitListening(t, httpAddr)
	start(t, "tether-agent", "--server", grpcAddr, "--device-id", "gwj-1", "--config", writeAgentConfig(t, ""))
	base := "http://" + httpAddr
	waitOnline(t, base, "gwj-1", 20*time.Second)

	post := func(path, body string) (int, map[string]any) {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	code, m := post("/v1/jobs", `{"name": "echo", "args": ["via", "gateway"], "target": {"deviceIds": ["gwj-1"]}}`)
	if code != 200 {
		t.Fatalf("POST /v1/jobs: %d %v", code, m)
	}
	id := m["job"].(map[string]any)["jobId"].(string)
	eventually(t, 20*time.Second, func() error {
		j, err := getJob(base, id)
		if err != nil {
			return err
		}
		if j.State != "JOB_STATE_DONE" || j.Progress.Succeeded != 1 {
			return fmt.Errorf("job %+v", j)
		}
		return nil
	})
	var res struct {
		Results []struct {
			DeviceID, State, Output, Node string
		} `json:"results"`
		NextPageToken string `json:"nextPageToken"`
	}
	if err := getJSON(base+"/v1/jobs/"+id+"/results?pageSize=10", &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 1 || res.Results[0].State != "JOB_DEVICE_STATE_SUCCEEDED" || res.Results[0].Output != "via gateway\n" || res.Results[0].Node != "gw-jobs" {
		t.Fatalf("results: %+v", res)
	}
	var list struct {
		Jobs []jobJSON `json:"jobs"`
	}
	if err := getJSON(base+"/v1/jobs", &list); err != nil || len(list.Jobs) != 1 || list.Jobs[0].JobID != id {
		t.Fatalf("GET /v1/jobs: %+v %v", list, err)
	}
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/v1/jobs", `{"name": "rm -rf", "target": {"deviceIds": ["gwj-1"]}}`, 400},
		{"/v1/jobs", `{"name": "echo"}`, 400},
		{"/v1/jobs", `{"name": "echo", "target": {"labelSelector": "nobody=here"}}`, 400},
		{"/v1/jobs", `{"name": "echo", "rate": "fast", "target": {"deviceIds": ["gwj-1"]}}`, 400},
		{"/v1/jobs/no-such-job:cancel", `{}`, 404},
	} {
		code, m := post(c.path, c.body)
		if code != c.want || m["message"] == nil || m["code"] == nil {
			t.Errorf("POST %s %s: %d %v; want %d with a JSON error", c.path, c.body, code, m, c.want)
		}
	}
}
