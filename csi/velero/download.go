package velero

import (
	"context"

	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
)

// reconcileDownload serves DataDownloads. Restores are not served yet:
// a DataDownload of this mover stays New.
func (c *Controller) reconcileDownload(_ context.Context, dd *velerov2.DataDownload) {
	if dd.Spec.DataMover != c.cfg.Name {
		return
	}
}
