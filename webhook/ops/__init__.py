"""The operator's tools, outside the admission path: the launcher, the doctor, offline mutation and tests,
and the one Kubernetes client they (and certificate management) share."""
