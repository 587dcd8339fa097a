package loadgen

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// pickTries is how many random agents the driver looks at to find a
// connected one before it skips a call.
const pickTries = 32

// maxLag is how far the command schedule may fall behind before it is
// re-anchored instead of bursting to catch up.
const maxLag = time.Second

// driveCommands issues SendCommand "echo" calls at CommandsRate against
// random connected devices until ctx ends, then cancels the calls in flight
// and waits for them.
func (r *runner) driveCommands(ctx context.Context) {
	var call commandCall
	if r.cfg.CommandsHTTP != "" {
		call = httpCommand(r.cfg.CommandsHTTP, r.cfg.CommandsConcurrency)
	} else {
		conn, err := grpc.NewClient("passthrough:///"+r.cfg.CommandsVia,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithUserAgent("tether-loadgen/"+r.cfg.AgentVersion))
		if err != nil {
			r.st.commandFailed(codeKey(err), err)
			return
		}
		defer conn.Close()
		call = grpcCommand(tetherv1.NewDeviceServiceClient(conn))
	}

	slots := make(chan struct{}, r.cfg.CommandsConcurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	// The calls run under a context without ctx's deadline: a call must
	// carry only CommandTimeout, or the end of the hold time would reach
	// the server as the call's deadline and come back as DeadlineExceeded
	// before ctx itself reports done.
	callCtx, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls() // runs before wg.Wait
	r.cmdCountFrom.Store(time.Now().Add(r.cfg.CommandsWarmup).UnixNano())
	interval := time.Duration(float64(time.Second) / r.cfg.CommandsRate)
	next := time.Now()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for seq := 0; ; seq++ {
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		} else if d < -maxLag {
			next = time.Now()
		}
		if ctx.Err() != nil {
			return
		}
		a := r.pickConnected()
		if a == nil {
			r.st.cmdSkipped.Add(1)
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			r.st.cmdSkipped.Add(1)
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			r.sendCommand(callCtx, call, a.id, seq)
		})
	}
}

// pickConnected returns a random connected agent, or nil when a few random
// draws found none.
func (r *runner) pickConnected() *agent {
	for range pickTries {
		a := &r.agents[rand.IntN(len(r.agents))]
		if a.connected.Load() {
			return a
		}
	}
	return nil
}

// commandCall runs one echo command and returns the device's output and
// error text, or a failure with its gRPC code name.
type commandCall func(ctx context.Context, device string, args []string, timeout time.Duration) (output, deviceErr string, err error)

func grpcCommand(client tetherv1.DeviceServiceClient) commandCall {
	return func(ctx context.Context, device string, args []string, timeout time.Duration) (string, string, error) {
		resp, err := client.SendCommand(ctx, &tetherv1.SendCommandRequest{
			DeviceId: device, Name: "echo", Args: args, Timeout: durationpb.New(timeout),
		})
		return resp.GetOutput(), resp.GetError(), err
	}
}

func (r *runner) sendCommand(ctx context.Context, call commandCall, device string, seq int) {
	st := r.st
	args := []string{"loadgen", strconv.Itoa(seq)}
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CommandTimeout)
	defer cancel()
	began := time.Now()
	if began.UnixNano() < r.cmdCountFrom.Load() {
		_, _, _ = call(cctx, device, args, r.cfg.CommandTimeout) // warm-up: not counted
		return
	}
	st.cmdSent.Add(1)
	output, deviceErr, err := call(cctx, device, args, r.cfg.CommandTimeout)
	took := time.Since(began)
	switch {
	case err != nil:
		if ctx.Err() == nil { // not our own shutdown
			st.commandFailed(codeKey(err), err)
		}
	case deviceErr != "" || strings.TrimSuffix(output, "\n") != args[0]+" "+args[1]:
		st.commandFailed("Mismatch", errors.New("device "+device+": output "+strconv.Quote(output)+" error "+strconv.Quote(deviceErr)))
	default:
		st.cmdOK.Add(1)
		st.cmdLatency.record(took)
	}
}
