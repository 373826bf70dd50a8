"""Running the explorer for a class: JupyterHub on one machine (per-student Unix users, the students' environment,
nbgrader's exchange) and the Helm values for Kubernetes."""
