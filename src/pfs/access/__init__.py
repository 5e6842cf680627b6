"""Identity and access (DESIGN.md section 6): who a request is, what it may do, and the
record of what was done. Above storage, beside the repositories; the HTTP front ends ask
it and never decide themselves."""
