package daemon

import "errors"

// closers is a stack of cleanups: New pushes one for each resource it
// builds and, when a later step fails, closes them newest first, so that
// no failure path has to list what came before it.
type closers []func() error

func (c *closers) push(f func() error) { *c = append(*c, f) }

// close runs every cleanup, newest first, and joins their errors.
func (c *closers) close() error {
	var err error
	for i := len(*c) - 1; i >= 0; i-- {
		err = errors.Join(err, (*c)[i]())
	}
	*c = nil
	return err
}
