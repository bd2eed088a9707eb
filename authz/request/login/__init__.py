"""Browser sign-in at the edge (issue 15): the OpenID Connect authorization code flow with
PKCE, run by authz for a policy's `login` block, and the sessions it leaves behind.

`flow` answers the sign-in paths (callback, logout, login) and turns a browser's denial
into a redirect to the provider; `credentials.session` reads the session cookie as the
request's credential; `jar` keeps sessions (in the cookie or in Redis); `runtime` owns the
jobs that do the I/O, so no Check does any.
"""
