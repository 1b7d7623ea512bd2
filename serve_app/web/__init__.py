"""The web app: a library, uploads, the queue panel and a 3D/VR viewer, served by the gateway from
the package (same origin as the API). Plain ES modules written here, WebGL2 and WebXR directly: no
build step and no third-party JavaScript."""
