package unplug_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/unplug-dev/unplug"
)

// TestYourClient is what a test of your own client looks like (13 lines):
// a peer with a fault, your client (here net/http) dialing through it, and
// a check on what it saw. The request goes into a 3 s outage and is still
// answered, after the outage, in virtual time.
func TestYourClient(t *testing.T) {
	p := unplug.New(t, unplug.Options{Clock: unplug.Virtual, Faults: []string{"drop for=3s"}})
	c := &http.Client{Transport: &http.Transport{DialContext: p.DialContext}}
	resp, err := c.Get("http://" + p.Addr(80) + "/bytes/5")
	if err != nil {
		t.Fatalf("the request did not survive a 3 s outage: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "01234" || p.Now() < 3e9 {
		t.Fatalf("got %q at %v, want the pattern after the outage", body, p.Now())
	}
}

// Example runs net/http against a peer that drops every packet for the
// first 3 s. The client's SYN is lost at 0 s and again at 1 s; the next
// one, 2 s later (gVisor's SYN backoff doubles from 1 s), is the first after
// the outage, and the request is answered at that instant: there is no link
// delay. (In a test, New(t, …) replaces Start and Close.)
func Example() {
	p, err := unplug.Start(unplug.Options{Clock: unplug.Virtual, Faults: []string{"drop for=3s"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	c := &http.Client{Transport: &http.Transport{DialContext: p.DialContext}}
	resp, err := c.Get("http://" + p.Addr(80) + "/bytes/10")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("%s %q after %v of virtual time\n", resp.Status, body, p.Now())
	// Output: 200 OK "0123456789" after 3s of virtual time
}
