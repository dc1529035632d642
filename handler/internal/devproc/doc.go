// Package devproc is how the development tools (handler/cmd/bench, `make
// bench`, and handler/cmd/load, `make load`) run the connector's handler as
// a child process and read what Linux keeps about processes in /proc.
//
// The child is the tool's own binary re-executed (with -role=handler): it
// takes its listener from file descriptor 3 (InheritedListener), which the
// parent keeps open so every child answers on the same URL, runs app.Serve
// as the Functions host would with the tool's measuring transport in front
// of the production one (ServeHandler), and reports to the parent in JSON
// lines on its stdout (Report). The parent starts it and
// waits until it answers GET / (Start), collects its reports, signals it,
// stops it as the Functions host does (Stop) or kills it (Kill). What a
// report holds, and when a child sends one, is each tool's own business.
//
// StatusKiB and LoadAvg read /proc: a process's VmHWM (the kernel's own
// high-water mark of the resident set, the true peak rather than a sample
// that could miss a short spike) and VmRSS, the machine's memory and load.
//
// Development only: never packaged; the product does not import it. The
// child handling is Linux only (it relies on Pdeathsig); the /proc readers
// build everywhere and fail where there is no /proc.
package devproc
