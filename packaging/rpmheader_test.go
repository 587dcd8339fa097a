package packaging

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path"
)

// rpmPackage is what the test reads back from an .rpm without rpm(8): the
// main header's tags (the RPM file format: a 96-byte lead, the signature
// header padded to 8 bytes, the main header, then the payload).
type rpmPackage struct {
	Name, Version, Release, Arch string
	Files                        []rpmFile
	Requires                     []string
	Scripts                      map[string]string // preinstall, postinstall, preremove, postremove
	ScriptProgs                  map[string]string // their interpreters
}

type rpmFile struct {
	Path     string
	Mode     uint16
	Flags    uint32 // RPMFILE_* (1 = %config, 16 = noreplace)
	User     string
	Group    string
	IsConfig bool
}

const (
	rpmFileConfig    = 1 << 0
	rpmFileNoReplace = 1 << 4
)

type rpmTag struct {
	typ   uint32
	count uint32
	data  []byte // from the entry's offset to the end of the store
}

func readRPM(file string) (*rpmPackage, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if len(b) < 96 || !bytes.Equal(b[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return nil, fmt.Errorf("%s: not an rpm (lead magic)", file)
	}
	off := 96
	_, n, err := rpmHeader(b, off) // signature header
	if err != nil {
		return nil, fmt.Errorf("signature header: %w", err)
	}
	off += n
	off = (off + 7) &^ 7
	tags, _, err := rpmHeader(b, off)
	if err != nil {
		return nil, fmt.Errorf("main header: %w", err)
	}
	str := func(tag int32) string {
		t, ok := tags[tag]
		if !ok {
			return ""
		}
		s, _, _ := bytes.Cut(t.data, []byte{0})
		return string(s)
	}
	strs := func(tag int32) []string {
		t, ok := tags[tag]
		if !ok {
			return nil
		}
		var out []string
		rest := t.data
		for i := uint32(0); i < t.count; i++ {
			s, r, _ := bytes.Cut(rest, []byte{0})
			out = append(out, string(s))
			rest = r
		}
		return out
	}
	ints := func(tag int32, size int) []uint32 {
		t, ok := tags[tag]
		if !ok {
			return nil
		}
		out := make([]uint32, t.count)
		for i := range out {
			if size == 2 {
				out[i] = uint32(binary.BigEndian.Uint16(t.data[2*i:]))
			} else {
				out[i] = binary.BigEndian.Uint32(t.data[4*i:])
			}
		}
		return out
	}
	p := &rpmPackage{
		Name: str(1000), Version: str(1001), Release: str(1002), Arch: str(1022),
		Requires:    strs(1049),
		Scripts:     map[string]string{},
		ScriptProgs: map[string]string{},
	}
	for tag, name := range map[int32]string{1023: "preinstall", 1024: "postinstall", 1025: "preremove", 1026: "postremove"} {
		if s := str(tag); s != "" {
			p.Scripts[name] = s
		}
	}
	for tag, name := range map[int32]string{1085: "preinstall", 1086: "postinstall", 1087: "preremove", 1088: "postremove"} {
		if t, ok := tags[tag]; ok {
			if t.typ == 8 {
				p.ScriptProgs[name] = strs(tag)[0]
			} else {
				p.ScriptProgs[name] = str(tag)
			}
		}
	}
	base, dirs, idx := strs(1117), strs(1118), ints(1116, 4)
	modes, flags := ints(1030, 2), ints(1037, 4)
	users, groups := strs(1039), strs(1040)
	if len(idx) != len(base) || len(modes) != len(base) || len(flags) != len(base) || len(users) != len(base) || len(groups) != len(base) {
		return nil, fmt.Errorf("file tags disagree: %d names, %d dir indexes, %d modes, %d flags", len(base), len(idx), len(modes), len(flags))
	}
	for i, name := range base {
		if int(idx[i]) >= len(dirs) {
			return nil, fmt.Errorf("dir index %d out of range", idx[i])
		}
		p.Files = append(p.Files, rpmFile{
			Path: path.Join(dirs[idx[i]], name), Mode: uint16(modes[i]), Flags: flags[i],
			User: users[i], Group: groups[i], IsConfig: flags[i]&rpmFileConfig != 0,
		})
	}
	return p, nil
}

// rpmHeader reads one header structure at off: its tags and its length.
func rpmHeader(b []byte, off int) (map[int32]rpmTag, int, error) {
	if len(b) < off+16 || !bytes.Equal(b[off:off+4], []byte{0x8e, 0xad, 0xe8, 0x01}) {
		return nil, 0, fmt.Errorf("bad header magic at %d", off)
	}
	nindex := int(binary.BigEndian.Uint32(b[off+8:]))
	hsize := int(binary.BigEndian.Uint32(b[off+12:]))
	index := off + 16
	store := index + 16*nindex
	end := store + hsize
	if nindex > 1<<16 || hsize > 1<<28 || end > len(b) {
		return nil, 0, fmt.Errorf("header at %d: %d entries, %d bytes: out of bounds", off, nindex, hsize)
	}
	tags := make(map[int32]rpmTag, nindex)
	for i := 0; i < nindex; i++ {
		e := b[index+16*i:]
		tag := int32(binary.BigEndian.Uint32(e))
		typ := binary.BigEndian.Uint32(e[4:])
		o := int(int32(binary.BigEndian.Uint32(e[8:])))
		count := binary.BigEndian.Uint32(e[12:])
		if o < 0 || o > hsize {
			return nil, 0, fmt.Errorf("tag %d: offset %d out of the store", tag, o)
		}
		tags[tag] = rpmTag{typ: typ, count: count, data: b[store+o : end]}
	}
	return tags, end - off, nil
}
