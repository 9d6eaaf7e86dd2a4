// Command kube-apiserver is Kubernetes' own API server (cmd/kube-apiserver of
// k8s.io/kubernetes), built here so flannelu's tests run against a real one.
package main

import (
	"os"

	_ "time/tzdata" // for CronJob time zones, as upstream's main does

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
