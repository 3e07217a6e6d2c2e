// Package noagent is a test package that forgets tun.RunAgentIfRequested in
// its (absent) TestMain, as a user might: TestMissingAgentCall in package
// tun builds it and checks that the re-executed agent fails with one line
// instead of starting agents without end.
package noagent

import (
	"context"
	"testing"

	"github.com/unplug-dev/unplug/tun"
)

func TestNamespace(t *testing.T) {
	ns, err := tun.NewNamespace(context.Background(), tun.NamespaceConfig{TUN: tun.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
}
