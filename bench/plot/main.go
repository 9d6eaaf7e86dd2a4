// Command plot draws join-to-route latency against cluster size from the
// control-plane harness's results (bench/results-control-plane.json): one
// panel per store and backend, a line per daemon for the p99 (solid) and
// the p50 (dashed) of the burst's joins.
//
//	cd bench/plot && go run . -in ../results-control-plane.json -out ../../docs/join-latency.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"os"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

type results struct {
	Date   string `json:"date"`
	Combos []struct {
		Store   string `json:"store"`
		Backend string `json:"backend"`
		Nodes   int    `json:"nodes"`
		Daemons []struct {
			Daemon string `json:"daemon"`
			Burst  *struct {
				JoinP50 float64 `json:"join_p50_ms"`
				JoinP99 float64 `json:"join_p99_ms"`
			} `json:"burst"`
		} `json:"daemons"`
	} `json:"combos"`
}

var colors = map[string]color.Color{
	"flannelu":         color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255},
	"flanneld-v0.20.2": color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 255},
	"flanneld-v0.28.9": color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 255},
}

func main() {
	in := flag.String("in", "../results-control-plane.json", "the harness's results")
	out := flag.String("out", "join-latency.png", "the PNG to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	stores, backends := []string{"etcd", "kube"}, []string{"udp", "vxlan", "host-gw"}
	tiles := draw.Tiles{Rows: len(stores), Cols: len(backends), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	plots := make([][]*plot.Plot, len(stores))
	for i, store := range stores {
		plots[i] = make([]*plot.Plot, len(backends))
		for j, backend := range backends {
			p, err := panel(r, store, backend)
			if err != nil {
				return err
			}
			plots[i][j] = p
		}
	}
	img := vgimg.New(vg.Length(len(backends))*110*vg.Millimeter, vg.Length(len(stores))*85*vg.Millimeter)
	dc := draw.New(img)
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j := range plots[i] {
			plots[i][j].Draw(canvases[i][j])
		}
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(f)
	return err
}

// panel is one store and backend: x the cluster's size N, y the join's
// latency in seconds (log scale: flanneld and flannelu differ by orders).
func panel(r results, store, backend string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s, %s: join to route, %d joins in 10 s", store, backend, 1000)
	p.X.Label.Text = "peers already in the cluster (N)"
	p.Y.Label.Text = "latency (s): p99 solid, p50 dashed"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = true
	type pt struct{ n, p50, p99 float64 }
	byDaemon := map[string][]pt{}
	for _, c := range r.Combos {
		if c.Store != store || c.Backend != backend {
			continue
		}
		for _, d := range c.Daemons {
			if d.Burst == nil {
				continue
			}
			byDaemon[d.Daemon] = append(byDaemon[d.Daemon], pt{float64(c.Nodes), max(d.Burst.JoinP50, 1) / 1000, max(d.Burst.JoinP99, 1) / 1000})
		}
	}
	var names []string
	for name := range byDaemon {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		pts := byDaemon[name]
		sort.Slice(pts, func(a, b int) bool { return pts[a].n < pts[b].n })
		p99, p50 := make(plotter.XYs, len(pts)), make(plotter.XYs, len(pts))
		for i, q := range pts {
			p99[i], p50[i] = plotter.XY{X: q.n, Y: q.p99}, plotter.XY{X: q.n, Y: q.p50}
		}
		for k, xy := range []plotter.XYs{p99, p50} {
			l, s, err := plotter.NewLinePoints(xy)
			if err != nil {
				return nil, err
			}
			l.Color, s.Color = colors[name], colors[name]
			l.Width = vg.Points(1.5)
			if k == 1 {
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			} else {
				p.Legend.Add(name, l, s)
			}
			p.Add(l, s)
		}
	}
	p.Add(plotter.NewGrid())
	return p, nil
}
