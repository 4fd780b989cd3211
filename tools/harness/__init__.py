"""The harness the tests, the benchmarks and the node tooling share.

Real parts started and watched the same way everywhere: kube-apiserver + etcd (controlplane),
`podmutate serve` and the processes around it (processes), and the inputs they send (pods,
hostile, fuzz, slow_clients). It imports podmutate's packages and nothing of tests/ or bench/.
"""
