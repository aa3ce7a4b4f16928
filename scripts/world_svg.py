#!/usr/bin/env python3
"""Writes crates/http/src/console/assets/world.svg: the land of Natural Earth 1:110m (public
domain), from world-atlas's land-110m.json (TopoJSON; `npm pack world-atlas@2`), projected
equirectangular onto a 360 x 180 box (x = longitude + 180, y = 90 - latitude), the projection
the console's map uses for its points.

    python3 scripts/world_svg.py path/to/land-110m.json > crates/http/src/console/assets/world.svg
"""
import json
import sys


def main(path):
    topo = json.load(open(path))
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x += dx
            y += dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)

    def ring(indices):
        out = []
        for i in indices:
            pts = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
            out.extend(pts if not out else pts[1:])
        return out

    paths = []
    for geom in topo["objects"]["land"]["geometries"]:
        polys = geom["arcs"] if geom["type"] == "MultiPolygon" else [geom["arcs"]]
        for poly in polys:
            for r in poly:
                pts = ring(r)
                d = "M" + "L".join(f"{lon + 180:.1f},{90 - lat:.1f}" for lon, lat in pts) + "Z"
                paths.append(d)
    sys.stdout.write(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 360 180">'
        "<!-- Land of Natural Earth 1:110m (public domain), via world-atlas 2.0.2 (ISC); "
        "equirectangular: x = longitude + 180, y = 90 - latitude. -->"
        '<path fill="#cfd8e3" stroke="none" d="'
        + "".join(paths)
        + '"/></svg>\n'
    )


if __name__ == "__main__":
    main(sys.argv[1])
