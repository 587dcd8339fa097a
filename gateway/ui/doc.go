// Package ui is Tether's operator web page: one HTML page with its CSS and
// JavaScript, embedded in the binary, with no build step and nothing loaded
// from another origin, so it works offline.
//
// Handler serves the page at "/" and its assets under "/ui/" (Prefix). The
// page talks only to the public JSON API of the gateway, with relative URLs
// (/v1/devices, /v1/devices:watch, /v1/devices/{id}, /v1/devices/{id}:command),
// so it must be mounted on the same origin as that API. Every answer carries
// Cache-Control: no-cache (with an ETag, so a reload revalidates cheaply) and a
// strict Content-Security-Policy: only same-origin scripts, styles, images and
// fetches; no inline script or style, no framing.
//
// docs/UI.md describes what the page shows and how it uses the API.
package ui
