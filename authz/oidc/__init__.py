"""The OpenID Connect relying party's I/O and secrets, for browser sign-in (issue 15):
provider discovery, the token endpoint, sealed cookies and the server-side session store.
Everything here that touches the network runs on a bounded pool (`jobs`), never on a Check's
own thread for longer than the bounded wait the request layer chooses."""
