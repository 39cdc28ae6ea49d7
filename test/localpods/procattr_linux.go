package localpods

import "syscall"

// sysProcAttr makes a broker die with the harness's process even when the
// test binary is killed without running Stop, so no broker outlives it
// holding a loopback address and port.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
