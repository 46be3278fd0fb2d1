package deployments

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The API types of KubeVirt (kubevirt.io/api) and of Multus
// (github.com/k8snetworkplumbingwg/network-attachment-definition-client)
// are not served by the Go module proxy, so the fields the examples use are
// mirrored here with their upstream JSON names. Strict decoding into these
// still rejects any field the mirror does not know; add a field here only
// after checking it in the upstream type named in its comment.

// kubeVirt mirrors kubevirt.io/api/core/v1.KubeVirt.
type kubeVirt struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		// KubeVirtSpec.Configuration (KubeVirtConfiguration).
		Configuration struct {
			DeveloperConfiguration *struct {
				FeatureGates []string `json:"featureGates,omitempty"`
			} `json:"developerConfiguration,omitempty"`
			PermittedHostDevices *struct {
				PciHostDevices []pciHostDevice `json:"pciHostDevices,omitempty"`
			} `json:"permittedHostDevices,omitempty"`
		} `json:"configuration,omitempty"`
	} `json:"spec"`
}

// pciHostDevice mirrors kubevirt.io/api/core/v1.PciHostDevice.
type pciHostDevice struct {
	PCIVendorSelector        string `json:"pciVendorSelector"`
	ResourceName             string `json:"resourceName"`
	ExternalResourceProvider bool   `json:"externalResourceProvider,omitempty"`
}

// virtualMachineInstance mirrors kubevirt.io/api/core/v1.VirtualMachineInstance.
type virtualMachineInstance struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Domain struct {
			Devices struct {
				Disks []struct {
					Name string `json:"name"`
					Disk *struct {
						Bus string `json:"bus,omitempty"`
					} `json:"disk,omitempty"`
				} `json:"disks,omitempty"`
				// HostDevice{Name, DeviceName}.
				HostDevices []struct {
					Name       string `json:"name"`
					DeviceName string `json:"deviceName"`
				} `json:"hostDevices,omitempty"`
			} `json:"devices"`
			Resources struct {
				Requests corev1.ResourceList `json:"requests,omitempty"`
			} `json:"resources,omitempty"`
		} `json:"domain"`
		Volumes []struct {
			Name          string `json:"name"`
			ContainerDisk *struct {
				Image string `json:"image"`
			} `json:"containerDisk,omitempty"`
		} `json:"volumes,omitempty"`
	} `json:"spec"`
}

// networkAttachmentDefinition mirrors
// k8s.cni.cncf.io/v1.NetworkAttachmentDefinition.
type networkAttachmentDefinition struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Config string `json:"config,omitempty"`
	} `json:"spec"`
}
