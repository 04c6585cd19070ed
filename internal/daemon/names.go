package daemon

import (
	"strconv"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
)

// listNames answers the names op: every DNS name of an app, with the
// addresses each resolves to, in one network or in all of them.
func (d *Daemon) listNames(req *control.NamesRequest) (any, error) {
	if req == nil {
		return nil, control.Errorf(control.CodeInvalid, "names needs an app")
	}
	if err := ids.App(req.App); err != nil {
		return nil, control.Errorf(control.CodeInvalid, "%v", err)
	}
	if req.Network != "" {
		if err := ids.Network(req.Network); err != nil {
			return nil, control.Errorf(control.CodeInvalid, "%v", err)
		}
	}
	x := d.view.Names()
	out := []control.Name{}
	for _, pn := range x.Networks() {
		if req.Network != "" && req.Network != pn {
			continue
		}
		rs := x.Containers(pn, req.App)
		if len(rs) == 0 {
			continue
		}
		appName := req.App + "." + pn + "." + ids.Zone
		web := control.Name{Name: appName, Network: pn, Addresses: []string{}}
		var byType []control.Name
		var each []control.Name
		for i, r := range rs {
			if r.Type == "web" {
				web.Addresses = append(web.Addresses, r.Addr.String())
			}
			if i == 0 || rs[i-1].Type != r.Type {
				byType = append(byType, control.Name{Name: r.Type + "." + appName, Network: pn, Type: r.Type})
			}
			t := &byType[len(byType)-1]
			t.Addresses = append(t.Addresses, r.Addr.String())
			each = append(each, control.Name{
				Name: strconv.Itoa(r.Number) + "." + r.Type + "." + appName, Network: pn,
				Type: r.Type, Number: r.Number, Addresses: []string{r.Addr.String()},
			})
		}
		out = append(out, web)
		out = append(out, byType...)
		out = append(out, each...)
	}
	return out, nil
}
