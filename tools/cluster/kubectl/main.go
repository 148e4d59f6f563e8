// Command kubectl is the upstream kubectl, built from the k8s.io/kubectl module
// exactly as k8s.io/kubernetes' cmd/kubectl/kubectl.go does. The tests run it
// as the person at the keyboard (rollout undo, set image, rollout history).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	// As upstream: set the verbosity before the command is built, so klog works
	// while the command (plugins, .kuberc) is constructed.
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
