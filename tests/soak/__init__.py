"""`make soak`: sustained loopback load through Envoy with policy changes; see driver.py."""
