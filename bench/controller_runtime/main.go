// A mutating webhook written as a controller-runtime user writes one: the benchmark's Go peer.
//
// It makes the MutatingAdmissionPolicy's mutations (bench/policy.py), read at start from the
// JSON file --mutations names (bench/controller_runtime/__init__.py writes it from podmutate's
// own constants), so that it does the same work as the policy and Kyverno: the status-check
// annotation per job type, the /tmp, pipes and config volumes merged by name, the mounts merged
// by mount path, and the init container when the pod has none of that name. The answer is
// controller-runtime's own: the mutated pod, diffed against the request into a JSON Patch
// (admission.PatchResponseFromRaw).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ctrl "sigs.k8s.io/controller-runtime"
)

// Mutations is what --mutations holds.
type Mutations struct {
	JobTypeLabel     string               `json:"jobTypeLabel"`
	StatusAnnotation string               `json:"statusAnnotation"`
	FastJobTypes     []string             `json:"fastJobTypes"`
	FastInterval     string               `json:"fastInterval"`
	Interval         string               `json:"interval"`
	Volumes          []corev1.Volume      `json:"volumes"`
	MainContainer    string               `json:"mainContainer"`
	MainPullPolicy   corev1.PullPolicy    `json:"mainPullPolicy"`
	MainMounts       []corev1.VolumeMount `json:"mainMounts"`
	OtherMounts      []corev1.VolumeMount `json:"otherMounts"`
	InitContainer    corev1.Container     `json:"initContainer"`
}

type mutator struct {
	decoder   admission.Decoder
	mutations Mutations
}

func (m *mutator) Handle(_ context.Context, request admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := m.decoder.Decode(request, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	jobType, isJobPod := pod.Labels[m.mutations.JobTypeLabel]
	if !isJobPod {
		return admission.Allowed("not a job pod")
	}
	m.mutate(pod, jobType)
	mutated, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(request.Object.Raw, mutated)
}

func (m *mutator) mutate(pod *corev1.Pod, jobType string) {
	spec := &m.mutations
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[spec.StatusAnnotation] = spec.Interval
	if slices.Contains(spec.FastJobTypes, jobType) {
		pod.Annotations[spec.StatusAnnotation] = spec.FastInterval
	}
	for _, volume := range spec.Volumes {
		pod.Spec.Volumes = mergeVolume(pod.Spec.Volumes, volume)
	}
	for index := range pod.Spec.Containers {
		container := &pod.Spec.Containers[index]
		mounts := spec.OtherMounts
		if container.Name == spec.MainContainer {
			mounts = spec.MainMounts
			container.ImagePullPolicy = spec.MainPullPolicy
		}
		for _, mount := range mounts {
			container.VolumeMounts = mergeMount(container.VolumeMounts, mount)
		}
	}
	hasInit := slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == spec.InitContainer.Name
	})
	if !hasInit {
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, *spec.InitContainer.DeepCopy())
	}
}

// mergeVolume merges `volume` into the volume of its name, as an apply configuration does (the
// emptyDir's fields set over the existing ones), or appends it.
func mergeVolume(volumes []corev1.Volume, volume corev1.Volume) []corev1.Volume {
	for index := range volumes {
		if volumes[index].Name == volume.Name {
			if volumes[index].EmptyDir == nil {
				volumes[index].EmptyDir = &corev1.EmptyDirVolumeSource{}
			}
			if volume.EmptyDir != nil && volume.EmptyDir.Medium != "" {
				volumes[index].EmptyDir.Medium = volume.EmptyDir.Medium
			}
			return volumes
		}
	}
	return append(volumes, *volume.DeepCopy())
}

// mergeMount sets the volume of the mount at `mount`'s path (mounts are keyed by path), or appends it.
func mergeMount(mounts []corev1.VolumeMount, mount corev1.VolumeMount) []corev1.VolumeMount {
	for index := range mounts {
		if mounts[index].MountPath == mount.MountPath {
			mounts[index].Name = mount.Name
			return mounts
		}
	}
	return append(mounts, mount)
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 9443, "HTTPS port")
	certDir := flag.String("cert-dir", "", "directory holding tls.crt and tls.key")
	mutationsFile := flag.String("mutations", "", "JSON file of the mutations")
	flag.Parse()
	ctrl.SetLogger(zap.New())

	data, err := os.ReadFile(*mutationsFile)
	if err != nil {
		ctrl.Log.Error(err, "cannot read the mutations")
		os.Exit(1)
	}
	var mutations Mutations
	if err := json.Unmarshal(data, &mutations); err != nil {
		ctrl.Log.Error(err, "cannot parse the mutations")
		os.Exit(1)
	}
	server := webhook.NewServer(webhook.Options{Host: *host, Port: *port, CertDir: *certDir})
	decoder := admission.NewDecoder(runtime.NewScheme())
	server.Register("/mutate", &webhook.Admission{Handler: &mutator{decoder: decoder, mutations: mutations}})
	server.Register("/readyz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	if err := server.Start(ctrl.SetupSignalHandler()); err != nil {
		ctrl.Log.Error(err, "serving failed")
		os.Exit(1)
	}
}
