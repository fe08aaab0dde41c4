"""
Policy what-if: replay a workload on a simulated fleet with the policy code the daemon
runs, and compare the policies.

No daemon, Redis or libvirt: a fleet (L{vorchd.sim.fleet}) is a L{HostTable
<vorchd.state.table.HostTable>} like a daemon's read model holds; a trace
(L{vorchd.sim.traces}) is a list of creates and destroys; each decision is the first
pmid L{vorchd.placement.ranked} yields, as the daemon's create path takes it
(L{vorchd.placement.chosen}, by the same code; L{vorchd.sim.run}). What comes out
(L{vorchd.sim.report}) is a table or JSON, and with matplotlib a figure
(L{vorchd.sim.plot}). C{vorchd-sim} is L{vorchd.sim.cli}; the
admin's C{whatif}, over the fleet a daemon holds now, is L{vorchd.sim.whatif}.
"""
