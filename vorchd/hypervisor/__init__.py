"""
The hypervisor shell. L{interface.IHypervisor} is what vorchd asks of one PM, blocking;
L{host.LibvirtHost} provides it over one long-lived libvirt connection (its base copies
in L{vorchd.images.copies}, its VMs made and removed in L{vms}, their life in L{running},
their moves between PMs in L{moves}), L{fake.FakeHypervisor} in memory (its VMs' life and
moves in L{fakeguests}). L{service} owns the thread pool every call runs in:
C{await hypervisors.on(pmid).destroy_vm(...)} goes through L{service.ThreadedHypervisor},
generated from the interface by L{threaded}.
"""
