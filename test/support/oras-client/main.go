// A minimal `oras push` / `oras pull` over the ORAS project's Go SDK (oras.land/oras-go, Debian's
// golang-oras-oras-go-dev), for test/oras-client.test.ts: the oras Python SDK the issue names is on
// PyPI, which these machines cannot reach; this is the same project's client library, driven the way
// the oras CLI of its version drove it. Only what the test needs:
//
//	oras-client push  <ref> <file> [--annotation-file F] [--media-type T] --user U --password P
//	oras-client pull  <ref> <dir>  --user U --password P
//
// The annotation file is the oras CLI's format: {"$manifest": {...}, "$config": {...}, "<file name>": {...}}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	orascontent "oras.land/oras-go/pkg/content"
	"oras.land/oras-go/pkg/oras"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "oras-client:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: push <ref> <file> [...] | pull <ref> <dir> [...]")
	}
	verb, ref, path := args[0], args[1], args[2]
	flags := map[string]string{}
	for i := 3; i+1 < len(args); i += 2 {
		flags[args[i]] = args[i+1]
	}
	registry, err := orascontent.NewRegistry(orascontent.RegistryOptions{
		Username:  flags["--user"],
		Password:  flags["--password"],
		PlainHTTP: true,
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch verb {
	case "push":
		annotations := map[string]map[string]string{}
		if f := flags["--annotation-file"]; f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &annotations); err != nil {
				return fmt.Errorf("annotation file %s: %w", f, err)
			}
		}
		name := filepath.Base(path)
		store := orascontent.NewFile(filepath.Dir(path))
		defer store.Close()
		desc, err := store.Add(name, flags["--media-type"], path)
		if err != nil {
			return err
		}
		if a := annotations[name]; a != nil {
			for k, v := range desc.Annotations {
				a[k] = v
			}
			desc.Annotations = a
		}
		manifest, manifestDesc, config, configDesc, err := orascontent.GenerateManifestAndConfig(annotations["$manifest"], annotations["$config"], desc)
		if err != nil {
			return err
		}
		if err := store.Load(configDesc, config); err != nil {
			return err
		}
		if err := store.StoreManifest(ref, manifestDesc, manifest); err != nil {
			return err
		}
		pushed, err := oras.Copy(ctx, store, ref, registry, "")
		if err != nil {
			return err
		}
		fmt.Println(pushed.Digest)
	case "pull":
		store := orascontent.NewFile(path)
		defer store.Close()
		pulled, err := oras.Copy(ctx, registry, ref, store, "")
		if err != nil {
			return err
		}
		fmt.Println(pulled.Digest)
	default:
		return fmt.Errorf("unknown verb %s", verb)
	}
	return nil
}
