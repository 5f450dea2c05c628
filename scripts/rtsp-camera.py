#!/usr/bin/python3
"""An IP-camera stand-in for the lab: GStreamer's RTSP server (gst-rtsp-server) serving a live H.264 + AAC test
picture at rtsp://0.0.0.0:PORT/PATH, as cameras do. Run with Debian's python3 (the GObject bindings live there)."""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

VIDEO = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 ! rtph264pay name=pay0 pt=96",
    # A codec FLV does not carry: the relay must refuse it by name (the test of that error).
    "vp8": "vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96",
}
LAUNCH = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! {video} "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! avenc_aac ! rtpmp4gpay name=pay1 pt=97 )"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--address", default="0.0.0.0", help="listen address (127.0.0.1 outside a lab namespace)")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--path", default="/cam")
    p.add_argument("--user", help="require this user (basic auth) with --password")
    p.add_argument("--password")
    p.add_argument("--video", choices=sorted(VIDEO), default="h264", help="video codec to send")
    args = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH.format(video=VIDEO[args.video]))
    # One encoder for every client, as a camera has.
    factory.set_shared(True)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role_from_structure(Gst.Structure.new_from_string("viewer,media.factory.access=true,media.factory.construct=true"))
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"rtsp-camera: cannot listen on port {args.port}", file=sys.stderr)
        return 1
    print(f"rtsp-camera serving rtsp://{args.address}:{args.port}{args.path}", flush=True)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    signal.signal(signal.SIGINT, lambda *_: loop.quit())
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
